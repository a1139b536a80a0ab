"""Healing defaults that follow the references: Minitron's logit distillation is forward KL only."""

from __future__ import annotations

import inspect

from shortllm.cli.retrain import retrain
from shortllm.training.config import KDOptions


def test_kd_defaults_to_forward_kl_only():
    assert KDOptions().alpha == 1.0
    assert inspect.signature(retrain).parameters["kd_alpha"].default == 1.0
