"""``ppl`` (Shortened LLaMA) and ``sleb`` (SLEB): calibration perplexity with blocks removed.

Fast and exact: one full pass caches the hidden state entering every block; "block i removed" then
continues from block i's cached input through blocks i+1..n-1 only (see ``capture.py``). No model copies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from shortllm.scoring.base import Criterion, ScoreContext, ScoreResult, order_by_score, register, row_chunks
from shortllm.scoring.capture import full_pass, logits_from


def nll_sum(logits: torch.Tensor, input_ids: torch.Tensor) -> tuple[float, int]:
    """Summed next-token negative log-likelihood of ``input_ids`` under ``logits`` and the token count."""
    # Shift the labels rather than slicing the logits: a sliced view would be copied (a full-vocabulary
    # copy per call); the last position is ignored instead.
    labels = torch.cat([input_ids[:, 1:], torch.full_like(input_ids[:, :1], -100)], dim=1)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum",
                           ignore_index=-100)
    return loss.item(), input_ids[:, 1:].numel()


def perplexity(nll: float, count: int) -> float:
    """exp(mean NLL)."""
    return math.exp(nll / count)


def removal_perplexities(model: Any, input_ids: torch.Tensor, candidates: Sequence[int],
                         skip: Sequence[int] = (), batch_size: int | None = None,
                         progress=None) -> tuple[dict[int, float], float]:
    """Perplexity of the model with ``skip`` and each candidate block additionally removed.

    Returns:
        ({block: perplexity}, perplexity with only ``skip`` removed).
    """
    if progress is not None:
        progress(0, len(candidates))  # the total is known before the full model's pass
    fp = full_pass(model, input_ids, skip=skip, keep_logits=True, batch_size=batch_size)
    base = perplexity(*nll_sum(fp.logits, input_ids))
    del fp.logits
    out: dict[int, float] = {}
    for done, i in enumerate(candidates, 1):
        total, count = 0.0, 0
        for rows in row_chunks(input_ids.shape[0], batch_size):
            logits = logits_from(model, input_ids[rows], i, fp.inputs[i][rows], skip=skip)
            nll, n = nll_sum(logits, input_ids[rows])
            total, count = total + nll, count + n
        out[i] = perplexity(total, count)
        if progress:
            progress(done, len(candidates))
    return out, base


def ppl_criterion(ctx: ScoreContext) -> ScoreResult:
    """Per block: calibration perplexity with that block removed (lower = less important)."""
    ppl, base = removal_perplexities(ctx.model, ctx.input_ids, ctx.candidates, batch_size=ctx.batch_size,
                                     progress=ctx.progress)
    scores = [ppl.get(i) for i in range(ctx.num_blocks)]
    return ScoreResult(scores, order_by_score(scores, ctx.candidates), {"baseline_ppl": base})


def sleb_criterion(ctx: ScoreContext) -> ScoreResult:
    """Iterative: repeatedly remove the block whose removal gives the lowest calibration perplexity.

    The order holds the ``num_remove`` greedy picks, then the remaining candidates by their perplexity
    at the last step. A block's score is the perplexity reached when it was removed.
    """
    def removal(candidates, skip, progress=None):
        return removal_perplexities(ctx.model, ctx.input_ids, candidates, skip=skip, batch_size=ctx.batch_size,
                                    progress=progress)
    return sleb_search(ctx, removal)


def sleb_search(ctx: ScoreContext, removal) -> ScoreResult:
    """The SLEB greedy search over ``removal(candidates, skip, progress) -> ({block: ppl}, base ppl)`` (the
    in-memory :func:`removal_perplexities` or the layer-by-layer sweep)."""
    removed: list[int] = []
    steps = []
    scores: list[float | None] = [None] * ctx.num_blocks
    remaining = list(ctx.candidates)
    total_work = sum(len(remaining) - t for t in range(ctx.num_remove))
    done = 0
    last: dict[int, float] = {}
    base = None
    for _ in range(ctx.num_remove):
        def tick(d, t, offset=done):
            ctx.progress(offset + d, total_work)
        last, ppl_now = removal(remaining, removed, progress=tick)
        base = ppl_now if base is None else base
        done += len(remaining)
        pick = min(remaining, key=lambda i: (last[i], i))
        scores[pick] = last[pick]
        removed.append(pick)
        remaining.remove(pick)
        steps.append({"removed": pick, "ppl": last[pick]})
    if ctx.num_remove == 0:
        last, base = removal(remaining, [])
    for i in remaining:
        scores[i] = last.get(i)
    rest = sorted(remaining, key=lambda i: (last.get(i, math.inf), i))
    return ScoreResult(scores, removed + rest, {"baseline_ppl": base, "steps": steps})


register(Criterion("ppl", ppl_criterion, "calibration perplexity with each single block removed",
                   reference="Shortened LLaMA (arXiv 2402.02834)"))
# SLEB's barriers (early_barrier = latter_barrier = 1 in its sleb.py): the first and last blocks are never removed;
# --no-sleb-barriers lifts them (scoring/run.py default_protection).
register(Criterion("sleb", sleb_criterion, "iteratively remove the block whose removal hurts perplexity least",
                   iterative=True, protect_first=1, protect_last=1, reference="SLEB (arXiv 2402.09025)"))
