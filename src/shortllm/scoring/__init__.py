"""Block-importance criteria. Importing this package registers the built-in ones."""

from shortllm.scoring import perplexity, position, search, similarity, weights  # noqa: F401  (registration)
from shortllm.scoring.base import REGISTRY, Criterion, ScoreContext, ScoreResult, get_criterion  # noqa: F401
