"""The criteria by name. Importing this module imports every built-in criterion module (and torch with them);
each registers itself in ``base.REGISTRY`` on import. Code that only checks a name uses
``base.check_criterion_name``, which needs none of them."""

from __future__ import annotations

from shortllm.scoring import perplexity, position, search, similarity, weights  # noqa: F401  (registration)
from shortllm.scoring.base import REGISTRY, Criterion, _in_order, check_criterion_name


def get_criterion(name: str) -> Criterion:
    """Look up a criterion by name.

    Raises:
        BlockSelectionError: for an unknown name, listing the known ones.
    """
    check_criterion_name(name)
    return REGISTRY[name]


def criterion_names() -> list[str]:
    """Registered criterion names: the built-in ones in ``base.BUILTIN_CRITERIA`` order, then any others."""
    return _in_order(REGISTRY)
