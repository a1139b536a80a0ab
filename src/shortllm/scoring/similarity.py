"""Hidden-state similarity criteria: ``bi`` (ShortGPT Block Influence) and ``angular`` (Gromov et al.)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from shortllm.scoring.base import Criterion, ScoreContext, ScoreResult, order_by_score, register
from shortllm.scoring.capture import full_pass


def block_influence(x_in: torch.Tensor, x_out: torch.Tensor) -> float:
    """1 - cos(block input, block output), averaged over every token. Inputs: ``[N, T, H]``."""
    cos = F.cosine_similarity(x_in.float(), x_out.float(), dim=-1)
    return (1 - cos).mean().item()


def angular_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """arccos(cos(a, b)) / pi, averaged over rows. Inputs: ``[N, H]`` (last-token states)."""
    cos = F.cosine_similarity(a.float(), b.float(), dim=-1).clamp(-1.0, 1.0)
    return (torch.arccos(cos) / math.pi).mean().item()


def angular_table(states: Sequence[torch.Tensor], run: int) -> list[float]:
    """Angular distance between the last-token input of block l and of block l+run, for every l.

    ``states[i]`` is the input of block i (``states[n]`` the last block's output), each ``[N, T, H]``.
    """
    n = len(states) - 1
    return [angular_distance(states[start][:, -1], states[start + run][:, -1]) for start in range(n - run + 1)]


def best_run(distances: list[float], run: int, candidates: Sequence[int]) -> int | None:
    """Start of the run of ``run`` blocks, all candidates, with the smallest distance (None if none fits)."""
    allowed = set(candidates)
    starts = [s for s in range(len(distances)) if all(b in allowed for b in range(s, s + run))]
    return min(starts, key=lambda s: (distances[s], s)) if starts else None


def bi_criterion(ctx: ScoreContext) -> ScoreResult:
    """Per block: Block Influence (low = the block barely changes its input)."""
    fp = full_pass(ctx.model, ctx.input_ids, keep_logits=False, batch_size=ctx.batch_size)
    scores: list[float | None] = [None] * ctx.num_blocks
    for done, i in enumerate(ctx.candidates, 1):
        scores[i] = block_influence(fp.inputs[i], fp.inputs[i + 1])
        ctx.progress(done, len(ctx.candidates))
    return ScoreResult(scores, order_by_score(scores, ctx.candidates))


def angular_criterion(ctx: ScoreContext) -> ScoreResult:
    """Contiguous: the run of ``num_remove`` blocks whose input and output are closest in angle.

    Scores are the distances of the runs starting at each block; the order is the best run first, then
    the other candidates by the distance of the run starting at them. Every run length's table is kept in
    ``extras`` so a saved score run can plan any number of blocks later.
    """
    fp = full_pass(ctx.model, ctx.input_ids, keep_logits=False, batch_size=ctx.batch_size)
    return angular_result(ctx, fp.inputs)


def angular_result(ctx: ScoreContext, states: Sequence[torch.Tensor]) -> ScoreResult:
    """The ``angular`` result from the states entering every block (``states[n]``: the last block's output),
    each ``[N, T, H]`` (only the last token is read, so ``[N, 1, H]`` will do: the layer-by-layer sweep)."""
    n = ctx.num_blocks
    tables = {m: angular_table(states, m) for m in range(1, n)}
    run = max(ctx.num_remove, 1)
    distances = tables[run]
    scores: list[float | None] = [distances[b] if b < len(distances) and b in ctx.candidates else None
                                  for b in range(n)]
    start = best_run(distances, run, ctx.candidates)
    chosen = list(range(start, start + run)) if start is not None else []
    rest = sorted((i for i in ctx.candidates if i not in chosen),
                  key=lambda i: (distances[i] if i < len(distances) else math.inf, i))
    ctx.progress(n, n)
    return ScoreResult(scores, chosen + rest, {"run_length": run, "run_start": start,
                                               "distances": {str(m): t for m, t in tables.items()}})


register(Criterion("bi", bi_criterion, "Block Influence: 1 - cos(block input, block output)",
                   reference="ShortGPT (arXiv 2403.03853)"))
register(Criterion("angular", angular_criterion,
                   "angular distance between the inputs of block l and l+n; removes a contiguous run",
                   contiguous=True, iterative=True, reference="Gromov et al. (arXiv 2403.17887)"))
