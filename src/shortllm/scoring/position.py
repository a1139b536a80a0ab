"""``chop`` (LayerChop): the contiguous run just before the last block. Needs no data."""

from __future__ import annotations

from shortllm.scoring.base import Criterion, ScoreContext, ScoreResult, register


def chop_order(num_blocks: int, candidates: list[int]) -> list[int]:
    """Blocks n-2, n-3, ..., 0, then n-1: removing the first k gives the run just before the last block."""
    allowed = set(candidates)
    return [i for i in [*range(num_blocks - 2, -1, -1), num_blocks - 1] if i in allowed]


def chop_criterion(ctx: ScoreContext) -> ScoreResult:
    """Deterministic: the score is the block's rank in the chop order."""
    order = chop_order(ctx.num_blocks, ctx.candidates)
    scores: list[float | None] = [None] * ctx.num_blocks
    for rank, i in enumerate(order):
        scores[i] = float(rank)
    ctx.progress(1, 1)
    return ScoreResult(scores, order)


register(Criterion("chop", chop_criterion, "the contiguous run just before the last block",
                   needs_data=False, contiguous=True, reference="LayerChop (arXiv 2305.14864)"))
