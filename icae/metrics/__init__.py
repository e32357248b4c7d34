from icae.metrics.squad import normalize_answer, squad_scores
from icae.metrics.text import bleu1, exact_match, token_accuracy

__all__ = ["bleu1", "exact_match", "token_accuracy", "normalize_answer", "squad_scores"]
