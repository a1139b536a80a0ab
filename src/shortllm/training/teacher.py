"""What is done to the teacher before it teaches: teacher correction (``--teacher-warmup-steps N``: fine-tune it
briefly on the healing data) and compact storage (``--teacher-dtype``: its weights kept in 16 bits).

Minitron (Sreenivas et al. 2024, arXiv 2408.11796) finds that a teacher distilling on data unlike its own
training data gives a worse student, and "corrects" it first with a light fine-tune on the distillation data.
Here the teacher takes ``N`` AdamW steps of next-token cross-entropy (the run's learning rate, batch size and
gradient clipping, constant rate) on the training rows, in a seeded order of its own; then it is frozen again.
The steps are a pure function of the seed and the data, so a resumed run redoes them and gets the same
teacher (no teacher weights go into checkpoints). Every process does the same steps on the same rows, so
every process holds the same teacher.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def warm_up_teacher(teacher: Any, data: Any, steps: int, lr: float, batch_size: int, seed: int, pad_id: int,
                    device: Any, autocast: Any, max_grad_norm: float = 1.0) -> list[float]:
    """Fine-tune ``teacher`` in place for ``steps`` steps of cross-entropy on ``data``'s training rows.

    Args:
        teacher: the teacher causal LM (on ``device``); left in eval mode without gradients.
        data: the run's :class:`shortllm.training.data.TrainData`.
        steps, lr, batch_size, seed: the warm-up's length, learning rate, rows per step and order seed.
        autocast: ``accelerator.autocast``.

    Returns:
        The token-mean loss of each step.
    """
    from shortllm.training.batches import collate, make_batches
    from shortllm.training.forward import LossSetup, check_head, micro_losses, output_head
    from shortllm.training.loop import adamw

    log.info("Teacher correction: %d steps on the healing data (worth it when they differ from the teacher's own "
             "training data; Minitron)", steps, extra={"phase": True})
    head = output_head(teacher)
    setup = LossSetup(head=head if check_head(teacher, head, device) else None)
    batches = make_batches(data, seed + 7919, batch_size, 1, 1)  # an order of its own, not the student's
    teacher.requires_grad_(True)
    teacher.train()
    optimizer = adamw([p for p in teacher.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    losses = []
    try:
        for step in range(steps):
            rows = batches.step(step)
            batch = {k: v.to(device) for k, v in collate(rows, list(range(len(rows))), pad_id).items()}
            with autocast():
                ce, _, _, count = micro_losses(teacher, None, setup, batch, autocast, with_teacher=False)
            loss = ce / count.clamp_min(1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(teacher.parameters(), max_grad_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        optimizer.zero_grad(set_to_none=True)
        teacher.eval().requires_grad_(False)
    if losses:
        log.info("teacher correction: loss %.4f -> %.4f", losses[0], losses[-1])
    return losses


def store_teacher(teacher: Any, dtype: str) -> int:
    """Keep ``teacher``'s floating-point weights in ``dtype`` and run every module in float32 all the same.

    Each module with weights of its own gets a forward pre-hook that swaps in float32 copies of them and a
    forward hook that swaps the stored ones back, so at most one module's weights exist in float32 at a time.
    Memory: 2 bytes per teacher parameter instead of 4 (the 135M-parameter embedded model: 257 MiB less), plus
    one module's float32 copy while it runs. Numerics: the teacher's weights are rounded to ``dtype`` once; the
    arithmetic stays float32 (or what ``accelerator.autocast`` makes of it), which matters on CPUs without
    16-bit matrix units, where bfloat16 arithmetic runs 6.5x slower than float32
    (``benchmarks/results/dtype_speed.json``). Buffers (RoPE frequencies) are not touched. The weights are
    upcast with ``Tensor.to``: shared (tied) parameters are swapped by whichever module runs.

    Args:
        teacher: the frozen teacher (an ``nn.Module``; after any teacher correction), loaded in float32 or
            already in ``dtype`` (``retrain`` loads it so when there is no teacher correction).
        dtype: one of ``config.TEACHER_DTYPES``; ``float32`` leaves the teacher as it is.

    Returns:
        Bytes saved against float32 weights (0 for ``float32``).
    """
    if dtype == "float32":
        return 0
    target = getattr(torch, dtype)
    saved = 0
    seen: set[int] = set()
    for module in teacher.modules():
        own = [p for p in module.parameters(recurse=False) if p.is_floating_point()]
        if not own:
            continue
        for p in own:
            if id(p) not in seen:  # a tied parameter once
                seen.add(id(p))
                p.data = p.data.to(target)
                saved += p.numel() * (4 - p.element_size())
        stored: list[torch.Tensor] = []

        def upcast(mod: Any, _args: Any, own: list = own, stored: list = stored) -> None:
            stored[:] = [p.data for p in own]
            for p in own:
                p.data = p.data.float()

        def restore(mod: Any, _args: Any, _out: Any, own: list = own, stored: list = stored) -> None:
            for p, data in zip(own, stored):
                p.data = data
            stored.clear()

        module.register_forward_pre_hook(upcast)
        module.register_forward_hook(restore)
    log.info("teacher weights stored in %s (%.0f MiB less); computed in float32", dtype, saved / 2**20)
    return saved
