"""Healing a pruned model: LoRA, continued pretraining (CPT) and distillation (KD) on one accelerate loop.

``retrain(TrainConfig(...))`` is what ``shortllm retrain`` runs; docs/retrain.md describes the methods and
docs/distributed.md the multi-process launches. The names load on first use (PEP 562), so the option checks of
``training.config`` run before torch is imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RetrainResult", "TrainConfig", "TrainingError", "retrain"]
_HOME = {"TrainConfig": "config", "TrainingError": "config", "RetrainResult": "output", "retrain": "run"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'shortllm.training' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(f"shortllm.training.{_HOME[name]}"), name)
