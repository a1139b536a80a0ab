"""The Accelerator of a retrain: which device and mixed precision it runs with (``--device``,
``--mixed-precision``, or an ``accelerate launch`` / ``torchrun`` environment), built with stdout kept for
``--json``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch

from shortllm.training.config import TrainConfig, TrainingError


def resolve_mixed_precision(choice: str, device: str) -> str | None:
    """``auto``: bf16 on CUDA when supported, else none; None defers to an ``accelerate launch`` config.

    Raises:
        TrainingError: bf16/fp16 asked for without CUDA.
    """
    import os

    if choice == "auto":
        if os.environ.get("ACCELERATE_MIXED_PRECISION"):
            return None
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if choice != "no" and not torch.cuda.is_available():
        raise TrainingError(f"--mixed-precision {choice} needs a CUDA GPU", "use --mixed-precision no on this machine")
    return choice


def make_accelerator(cfg: TrainConfig) -> Any:
    """The Accelerator for this run (picks up ``torchrun`` / ``accelerate launch`` environments)."""
    from accelerate import Accelerator

    from shortllm.models.loading import resolve_device

    device = resolve_device(cfg.settings.device) if cfg.settings.device != "auto" else "auto"
    with _stdout_to_stderr():  # stdout is for --json alone
        return Accelerator(cpu=device == "cpu",
                           mixed_precision=resolve_mixed_precision(cfg.mixed_precision, device),
                           gradient_accumulation_steps=cfg.grad_accum)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what is written to file descriptor 1 (C++ libraries included) to stderr for the block: under
    ``torchrun``, torch 2.8's gloo prints "[Gloo] Rank 0 is connected to 1 peer ranks" on stdout when the process
    group starts, which would break the one JSON object of ``--json``."""
    if sys.stdout is not None:
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # stdout closed (`>&-`): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        if sys.stdout is not None:
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
