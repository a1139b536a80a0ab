"""Block-importance criteria. The built-in ones (and torch) load with ``scoring.registry``, on the first use of
the registry, so option checks can import this package's light modules (``base``, ``options``)."""

from __future__ import annotations

from typing import Any

_NAMES = ("REGISTRY", "Criterion", "ScoreContext", "ScoreResult", "get_criterion", "criterion_names")


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'shortllm.scoring' has no attribute '{name}'")
    from shortllm.scoring import base, registry

    return getattr(registry if hasattr(registry, name) else base, name)
