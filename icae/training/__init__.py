from icae.training.trainer import ICAETrainer

__all__ = ["ICAETrainer"]
