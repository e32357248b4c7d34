from icae.metrics.squad import normalize_answer, squad_scores
from icae.metrics.text import bleu1, context_value_kept, exact_match, positional_match

__all__ = ["bleu1", "context_value_kept", "exact_match", "positional_match", "normalize_answer", "squad_scores"]
