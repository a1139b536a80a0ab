"""Weight criteria: ``magnitude`` and ``taylor``/``taylor+`` (Shortened LLaMA).

``taylor`` is lean: no gradient buffer for the whole model is ever kept. Each parameter's
``|W * dL/dW|^p`` is reduced in a post-accumulate-grad hook the moment its gradient is ready, and the
gradient is freed, so peak memory is about weights + activations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from shortllm.models.arch import blocks_of
from shortllm.scoring.base import Criterion, ScoreContext, ScoreResult, order_by_score, register


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
    """Sum over samples of each sample's mean next-token loss (what per-sample backward passes accumulate)."""
    logits = model(input_ids, use_cache=False).logits[:, :-1].float()
    target = input_ids[:, 1:]
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    return per_token.view(target.shape).mean(dim=1).sum()


def taylor_scores(model: Any, input_ids: torch.Tensor, norm: int = 1, lean: bool = True) -> list[float]:
    """Taylor importance of every block from one backward pass over the calibration batch.

    Args:
        lean: reduce and free each gradient as soon as it is accumulated (default); ``False`` keeps all
            gradients and reduces at the end (the reference; used by tests and the memory benchmark).
    """
    layers = blocks_of(model).layers
    owner = {p: i for i, block in enumerate(layers) for p in block.parameters()}
    flags = {p: p.requires_grad for p in model.parameters()}
    scores = [0.0] * len(layers)
    handles = []

    def reduce_and_free(param):
        scores[owner[param]] += taylor_term(param, param.grad, norm)
        param.grad = None

    try:
        for p in model.parameters():
            p.requires_grad_(p in owner)  # no gradients for embeddings, final norm and head
        if lean:
            handles = [p.register_post_accumulate_grad_hook(reduce_and_free) for p in owner]
        with torch.enable_grad():
            calibration_loss(model, input_ids).backward()
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
    values = taylor_scores(ctx.model, ctx.input_ids, ctx.norm, lean=True)
    ctx.progress(1, 1)
    return _per_block(ctx, values)


register(Criterion("taylor", taylor_criterion, "sum of |W * dL/dW| over the block's weights",
                   reference="Shortened LLaMA (arXiv 2402.02834)"))
register(Criterion("taylor+", taylor_criterion, "taylor with the first 4 and last 2 blocks protected",
                   protect_first=4, protect_last=2, reference="Shortened LLaMA (arXiv 2402.02834)"))
register(Criterion("magnitude", magnitude_criterion, "sum of |W|^p over the block's weights",
                   needs_data=False, reference="Shortened LLaMA (arXiv 2402.02834)"))
