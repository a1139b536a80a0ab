"""Weight criteria: ``magnitude`` and ``taylor``/``taylor+`` (Shortened LLaMA).

``taylor`` is lean: no gradient buffer for the whole model is ever kept. Each parameter's
``|W * dL/dW|^p`` is reduced in a post-accumulate-grad hook the moment its gradient is ready, and the
gradient is freed, so peak memory is about weights + activations.

``taylor`` always runs in float32, whatever the dtype the model was loaded in (the reference computes its
gradients on a float32 model): bf16 activations and gradients change the block order on real models. A bf16 or
fp16 model is upcast in place for the backward pass and cast back afterwards, which gives back the very same
weights (every bf16/fp16 value is exact in float32); the upcast needs float32 room for the weights meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from shortllm.models.arch import blocks_of
from shortllm.scoring.capture import patched_forwards
from shortllm.scoring.base import Criterion, ScoreContext, ScoreResult, order_by_score, register, row_chunks


def magnitude_importance(weights: Iterable[torch.Tensor], norm: int = 1) -> float:
    """Sum over the weights of ``|W|^norm``."""
    return sum(w.detach().float().abs().pow(norm).sum().item() for w in weights)


def taylor_term(weight: torch.Tensor, grad: torch.Tensor, norm: int = 1) -> float:
    """``sum |W * dL/dW|^norm`` for one parameter."""
    return (weight.detach().float() * grad.float()).abs().pow(norm).sum().item()


def taylor_importance(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], norm: int = 1) -> float:
    """Sum of :func:`taylor_term` over a block's (weight, gradient) pairs."""
    return sum(taylor_term(w, g, norm) for w, g in pairs)


def calibration_loss(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """Sum over samples of each sample's mean next-token loss (what per-sample backward passes accumulate).

    The straightforward version: one forward, full logits kept for backward.
    """
    logits = model(input_ids, use_cache=False).logits[:, :-1].float()
    target = input_ids[:, 1:]
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    return per_token.view(target.shape).mean(dim=1).sum()


def _checkpointed_blocks(model: Any):
    # Keep only each block's input for backward and recompute its insides then: activation memory drops
    # from every intermediate of every block to one block's worth.
    return patched_forwards((block, lambda fwd: functools.partial(checkpoint, fwd, use_reentrant=False))
                            for block in blocks_of(model).layers)


def _base_returns(model: Any, hidden: torch.Tensor, output_class: type):
    # The model's own head path (final projection, logit scaling, soft-capping) runs on ``hidden``.
    return patched_forwards([(model.base_model, lambda _: lambda *a, **k: output_class(last_hidden_state=hidden))])


def lean_calibration_loss(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """:func:`calibration_loss` with a small activation footprint, same value and gradients.

    Blocks are checkpointed, and the head + cross-entropy run one sample at a time under a checkpoint,
    so full-vocabulary logits exist for one sample at a time only (they dominate for large vocabularies).
    """
    with _checkpointed_blocks(model):
        out = model.base_model(input_ids=input_ids, use_cache=False)
    hidden, output_class = out[0], type(out)  # e.g. gpt2 reads .cross_attentions off its base output

    def sample_loss(h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        with _base_returns(model, h, output_class):
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    total = hidden.new_zeros((), dtype=torch.float32)
    for row in range(input_ids.shape[0]):
        total = total + checkpoint(sample_loss, hidden[row:row + 1], input_ids[row:row + 1], use_reentrant=False)
    return total


@contextlib.contextmanager
def float32_weights(model: Any) -> Iterator[None]:
    """Upcast every floating-point parameter and buffer of ``model`` to float32 in place; restore the dtypes after.

    The round trip is lossless for bf16/fp16 (float32 holds their values exactly), so the model is bit-identical
    afterwards. Parameters keep their identity (hooks and optimizer references stay valid).
    """
    tensors = [t for t in itertools.chain(model.parameters(), model.buffers())
               if t.is_floating_point() and t.dtype != torch.float32]
    dtypes = [t.dtype for t in tensors]
    for t in tensors:
        t.data = t.data.float()
    try:
        yield
    finally:
        for t, dtype in zip(tensors, dtypes):
            t.data = t.data.to(dtype)


def taylor_scores(model: Any, input_ids: torch.Tensor, norm: int = 1, lean: bool = True,
                  batch_size: int | None = None) -> list[float]:
    """Taylor importance of every block from the calibration loss's gradient (one backward pass per
    ``batch_size`` windows), in float32.

    The model is upcast to float32 for the pass whatever its dtype (:func:`float32_weights`), as Shortened
    LLaMA's reference computes it; half-precision gradients reorder blocks on real models.

    Args:
        lean: reduce and free each gradient as soon as it is accumulated (default); ``False`` keeps all
            gradients and reduces at the end (the reference; used by tests and the memory benchmark).
            Both use the same low-activation loss (:func:`lean_calibration_loss`), so they differ only in
            the gradient buffer.
        batch_size: windows per forward/backward (``--batch-size``; None: all at once). Smaller chunks bound the
            activations; the gradients of all chunks are summed before they are reduced (|W * dL/dW| of the
            whole loss, not a sum over chunks), so more than one chunk keeps every gradient as ``lean=False``.
    """
    layers = blocks_of(model).layers
    owner = {p: i for i, block in enumerate(layers) for p in block.parameters()}
    flags = {p: p.requires_grad for p in model.parameters()}
    scores = [0.0] * len(layers)
    handles = []
    chunks = row_chunks(input_ids.shape[0], batch_size)
    lean = lean and len(chunks) == 1  # a per-parameter reduction needs the whole gradient first

    def reduce_and_free(param):
        scores[owner[param]] += taylor_term(param, param.grad, norm)
        param.grad = None

    try:
        for p in model.parameters():
            p.requires_grad_(p in owner)  # no gradients for embeddings, final norm and head
        if lean:
            handles = [p.register_post_accumulate_grad_hook(reduce_and_free) for p in owner]
        with float32_weights(model), torch.enable_grad():
            for rows in chunks:  # the loss is a sum over windows: chunk gradients add up to the whole one
                lean_calibration_loss(model, input_ids[rows]).backward()
            if not lean:
                for p, i in owner.items():
                    if p.grad is not None:
                        scores[i] += taylor_term(p, p.grad, norm)
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None
    return scores


def _per_block(ctx: ScoreContext, values: list[float]) -> ScoreResult:
    scores: list[float | None] = [values[i] if i in ctx.candidates else None for i in range(ctx.num_blocks)]
    return ScoreResult(scores, order_by_score(scores, ctx.candidates))


def magnitude_criterion(ctx: ScoreContext) -> ScoreResult:
    """Per block: sum of |W|^p over its weights."""
    layers = blocks_of(ctx.model).layers
    values = []
    for i, block in enumerate(layers):
        values.append(magnitude_importance(block.parameters(), ctx.norm))
        ctx.progress(i + 1, len(layers))
    return _per_block(ctx, values)


def taylor_criterion(ctx: ScoreContext) -> ScoreResult:
    """Per block: sum of |W * dL/dW|^p over its weights (lean gradient reduction)."""
    values = taylor_scores(ctx.model, ctx.input_ids, ctx.norm, lean=True, batch_size=ctx.batch_size)
    ctx.progress(1, 1)
    return _per_block(ctx, values)


register(Criterion("taylor", taylor_criterion, "sum of |W * dL/dW| over the block's weights",
                   reference="Shortened LLaMA (arXiv 2402.02834)"))
register(Criterion("taylor+", taylor_criterion, "taylor with the first 4 and last 2 blocks protected",
                   protect_first=4, protect_last=2, reference="Shortened LLaMA (arXiv 2402.02834)"))
register(Criterion("magnitude", magnitude_criterion, "sum of |W|^p over the block's weights",
                   needs_data=False, reference="Shortened LLaMA (arXiv 2402.02834)"))
