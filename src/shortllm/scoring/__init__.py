"""Block-importance criteria. The built-in ones (and torch) load when the registry is first read
(``base.get_criterion``, ``base.criterion_names``), so option checks can import this package's light modules."""

from __future__ import annotations

from typing import Any

_BASE = ("REGISTRY", "Criterion", "ScoreContext", "ScoreResult", "get_criterion")


def __getattr__(name: str) -> Any:
    if name not in _BASE:
        raise AttributeError(f"module 'shortllm.scoring' has no attribute '{name}'")
    from shortllm.scoring import base

    base.load_builtins()
    return getattr(base, name)
