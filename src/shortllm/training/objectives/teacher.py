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

from shortllm.errors import TrainingError

log = logging.getLogger(__name__)

# A stored output head larger than this (elements) is widened a slice of output rows at a time, never whole:
# the 49k x 576 head of SmolLM2 would otherwise take a 108 MiB float32 copy at every teacher head call, and the
# kd step with --gradient-checkpointing makes several (each chunk's forward and its recomputation).
WIDE_SLICE_ELEMENTS = 1 << 22  # 16 MiB of float32


def warm_up_teacher(teacher: Any, data: Any, steps: int, lr: float, batch_size: int, seed: int, pad_id: int,
                    device: Any, autocast: Any, max_grad_norm: float = 1.0) -> list[float]:
    """Fine-tune ``teacher`` in place for ``steps`` steps of cross-entropy on ``data``'s training rows.

    Args:
        teacher: the teacher causal LM (on ``device``); left in eval mode without gradients.
        data: the run's :class:`shortllm.training.data.rows.TrainData`.
        steps, lr, batch_size, seed: the warm-up's length, learning rate, rows per step and order seed.
        autocast: ``accelerator.autocast``.

    Returns:
        The token-mean loss of each step.
    """
    from shortllm.training.data.batches import collate, make_batches
    from shortllm.training.objectives.forward import LossSetup, micro_losses
    from shortllm.training.objectives.head import check_head, output_head
    from shortllm.optim import adamw

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


def store_teacher(teacher: Any, dtype: str | None, compute: torch.dtype = torch.float32) -> int:
    """Keep ``teacher``'s floating-point weights in ``dtype`` and run every module in ``compute`` (the student's
    precision: float32 unless ``--dtype`` says otherwise) all the same.

    Each module with weights of its own gets a forward pre-hook that swaps in copies of them in ``compute``
    and a forward hook (run even when the forward raises) that swaps the stored ones back, so at most
    one module's weights exist in the wider precision at a time. Embeddings look up rows of the stored table and
    widen the rows (the same numbers, without a copy of the table); the output head, when it is a plain
    ``Linear`` of more than :data:`WIDE_SLICE_ELEMENTS` weights, is widened a slice of output rows at a time.
    (Skipping the swap for the empty call that transformers makes on the head when no logits are kept raised
    the kd peak by 440 MiB, measured: kept.)
    Memory: 2 bytes per teacher parameter instead of 4 (the 135M-parameter embedded model: 257 MiB less), plus
    one module's wide copy while it runs. Numerics: the weights are rounded to ``dtype`` once; the arithmetic
    is what it was (under ``accelerator.autocast`` on a GPU, autocast's), which matters on CPUs without 16-bit
    matrix units, where bfloat16 arithmetic runs 6.5x slower than float32 (``benchmarks/results/dtype_speed.json``).
    Buffers (RoPE frequencies, embedding scales) stay as loaded. Tied parameters are swapped by whichever
    module runs. ``retrain`` loads the teacher in ``dtype`` directly (no float32 copy to free), except before a
    teacher correction, which trains it in the run's precision.

    Args:
        teacher: the frozen teacher (an ``nn.Module``; after any teacher correction), loaded in ``dtype`` or in
            a wider precision (narrowed here).
        dtype: one of ``config.TEACHER_DTYPES``, or None (leave the teacher as it is).
        compute: the precision each module runs in.

    Returns:
        Bytes saved against weights stored in ``compute`` (0 when ``dtype`` is None or ``compute``).

    Raises:
        TrainingError: a weight outside ``dtype``'s range (float16 tops out at 65504).
    """
    params = [p for p in teacher.parameters() if p.is_floating_point()]  # each tied parameter once
    if dtype is None or not params or getattr(torch, dtype) == compute:
        return 0
    target, wide = getattr(torch, dtype), compute
    saved = 0
    for p in params:
        if p.dtype != target:
            narrow = p.data.to(target)
            if not bool(torch.isfinite(narrow).all()):
                raise TrainingError(f"the teacher has weights beyond {dtype}'s range", "use --teacher-dtype bfloat16")
            p.data = narrow
        saved += p.numel() * (torch.finfo(wide).bits - torch.finfo(target).bits) // 8
    head = teacher.get_output_embeddings() if hasattr(teacher, "get_output_embeddings") else None
    for module in teacher.modules():
        own = [p for p in module.parameters(recurse=False) if p.is_floating_point()]
        if not own:
            continue
        if type(module) is torch.nn.Embedding:  # subclasses (Gemma's scaled one) may compute with the weight
            module.register_forward_hook(lambda _m, _a, out: out.to(wide) if out.is_floating_point() else out)
            continue
        if (module is head and type(module) is torch.nn.Linear and module.weight.numel() > WIDE_SLICE_ELEMENTS
                and "forward" not in module.__dict__):  # an instance forward (accelerate's offload hook) stays
            module.forward = _sliced_linear(module, wide)
            continue
        stack: list[list[torch.Tensor]] = []  # one entry per call in progress (re-entrant forwards)

        def widen(_module: Any, _args: Any, own: list = own, stack: list = stack) -> None:
            stack.append([p.data for p in own])
            for p in own:
                p.data = p.data.to(wide)

        def restore(_module: Any, _args: Any, _out: Any, own: list = own, stack: list = stack) -> None:
            stored = stack.pop() if stack else None
            for p, data in zip(own, stored or []):
                p.data = data

        module.register_forward_pre_hook(widen)
        module.register_forward_hook(restore, always_call=True)
    log.info("teacher weights stored in %s (%.0f MiB less), computed in %s", dtype, saved / 2**20,
             str(wide).replace("torch.", ""))
    return saved


def _sliced_linear(module: torch.nn.Linear, wide: torch.dtype):
    """``module``'s forward with its stored weight widened to ``wide`` one slice of output rows at a time
    (:data:`WIDE_SLICE_ELEMENTS` elements each): the same dot products (each output element reduces over the
    whole input dimension, as the full product does), without a wide copy of the whole matrix."""
    import torch.nn.functional as F

    def forward(x: torch.Tensor) -> torch.Tensor:
        weight, bias = module.weight, module.bias
        rows = max(1, WIDE_SLICE_ELEMENTS // weight.shape[1])
        x = x.to(wide)
        out = None
        for start in range(0, weight.shape[0], rows):
            piece = slice(start, start + rows)
            part = F.linear(x, weight[piece].to(wide), None if bias is None else bias[piece].to(wide))
            if out is None:  # the dtype F.linear gives (autocast's on a GPU), not necessarily ``wide``
                out = part.new_empty(*part.shape[:-1], weight.shape[0])
            out[..., piece] = part
        return out

    return forward
