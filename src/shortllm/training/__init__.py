"""Healing a pruned model: LoRA, continued pretraining (CPT) and distillation (KD) on one accelerate loop.

``retrain(TrainConfig(...))`` is what ``shortllm retrain`` runs; docs/retrain.md describes the methods and
docs/distributed.md the multi-process launches.
"""

from shortllm.training.config import TrainConfig, TrainingError
from shortllm.training.run import RetrainResult, retrain

__all__ = ["RetrainResult", "TrainConfig", "TrainingError", "retrain"]
