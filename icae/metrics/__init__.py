from icae.metrics.text import bleu1, exact_match, token_accuracy

__all__ = ["bleu1", "exact_match", "token_accuracy"]
