from icae.training.evaluation import evaluate_pretraining
from icae.training.trainer import ICAETrainer, PretrainingTrainer

__all__ = ["ICAETrainer", "PretrainingTrainer", "evaluate_pretraining"]
