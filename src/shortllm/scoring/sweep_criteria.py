"""The criteria as sweeps over streamed blocks (see ``sweep.py``): every block's weights are read once per sweep.

- ``bi``, ``angular``: one forward sweep; ``bi`` compares each block's input and output as they pass,
  ``angular`` keeps the last-token state entering every block (``[N, 1, H]`` each).
- ``magnitude``: one sweep over the weights alone. ``chop``: no weights.
- ``ppl``: one sweep. Besides the full model's stream, one activation tensor per candidate ("block c
  removed", born at block c as block c's input); each block runs once on the full stream and on every
  candidate stream past the removed block, candidates batched together, and the head runs once per
  candidate. Memory: (1 + candidates) x N x T x H values; candidates are split into groups that fit a
  quarter of the free memory, one sweep per group.
- ``sleb``: the ``ppl`` sweep repeated once per removed block, with the blocks removed so far skipped.
- ``taylor``/``taylor+``: a forward sweep keeping every block's input ((n + 1) x N x T x H values), the
  loss and its gradient at the last block's output, then a reverse sweep recomputing each block from its
  saved input, back-propagating through it alone, reducing ``|W * dL/dW|^p`` and freeing it.

The maths is the in-memory criteria's (``similarity``, ``weights``, ``perplexity``), reused, so the scores
match them (tested to 1e-4 relative on every tiny architecture and on the embedded model).
"""

from __future__ import annotations

import torch

from shortllm.errors import BlockSelectionError
from shortllm.scoring.base import Criterion, ScoreContext, ScoreResult, order_by_score, row_chunks
from shortllm.scoring.perplexity import nll_sum, perplexity, sleb_search
from shortllm.scoring.similarity import angular_result, block_influence
from shortllm.scoring.sweep import (WeightStream, available_bytes, capture_calls, continue_from, head_logits,
                                    run_block)
from shortllm.scoring.weights import calibration_loss, float32_weights, magnitude_importance, taylor_importance

TOKENS_PER_CALL = 16384  # candidate streams batched into one block call, up to this many tokens


def _entries(stream: WeightStream, ids: torch.Tensor, batch_size: int | None):
    """Per row chunk: (rows, embedded input of block 0, every block's call)."""
    n = len(stream.blocks.layers)
    out = []
    for rows in row_chunks(ids.shape[0], batch_size):
        hidden, calls = capture_calls(stream.model, ids[rows], n - 1)
        out.append((rows, hidden, calls))
    return out


def _forward(stream: WeightStream, ids: torch.Tensor, batch_size: int | None, ctx: ScoreContext, visit,
             total: int | None = None) -> list:
    """Forward sweep; ``visit(i, inputs, outputs)`` sees block i's input and output chunks. Returns the calls."""
    entries = _entries(stream, ids, batch_size)
    states = [hidden for _, hidden, _ in entries]
    n = len(stream.blocks.layers)
    for i in range(n):
        with torch.no_grad(), stream.block(i) as block:
            new = [run_block(block, x, calls[i]) for x, (_, _, calls) in zip(states, entries)]
        visit(i, states, new)
        states = new
        ctx.progress(i + 1, total or n)
    return [calls for _, _, calls in entries]


def bi_sweep(stream: WeightStream, ctx: ScoreContext) -> ScoreResult:
    """``bi`` in one sweep: Block Influence of each candidate as its input and output pass."""
    scores: list[float | None] = [None] * ctx.num_blocks

    def visit(i, inputs, outputs):
        if i in ctx.candidates:
            scores[i] = block_influence(torch.cat(inputs), torch.cat(outputs))

    _forward(stream, ctx.input_ids, ctx.batch_size, ctx, visit)
    return ScoreResult(scores, order_by_score(scores, ctx.candidates))


def angular_sweep(stream: WeightStream, ctx: ScoreContext) -> ScoreResult:
    """``angular`` in one sweep: the last-token state entering every block, then the in-memory tables."""
    last: list[torch.Tensor] = []

    def visit(i, inputs, outputs):
        last.append(torch.cat([x[:, -1:] for x in inputs]))
        if i == ctx.num_blocks - 1:
            last.append(torch.cat([x[:, -1:] for x in outputs]))

    _forward(stream, ctx.input_ids, ctx.batch_size, ctx, visit)
    return angular_result(ctx, last)


def magnitude_sweep(stream: WeightStream, ctx: ScoreContext) -> ScoreResult:
    """``magnitude``: sum of |W|^p per block, each block read once."""
    values = []
    for i in range(ctx.num_blocks):
        with stream.block(i) as block:
            values.append(magnitude_importance(block.parameters(), ctx.norm))
        ctx.progress(i + 1, ctx.num_blocks)
    scores = [values[i] if i in ctx.candidates else None for i in range(ctx.num_blocks)]
    return ScoreResult(scores, order_by_score(scores, ctx.candidates))


def removal_sweep(stream: WeightStream, ids: torch.Tensor, candidates: list[int], skip=(),
                  batch_size: int | None = None, progress=None) -> tuple[dict[int, float], float]:
    """Perplexity with ``skip`` and each candidate additionally removed, in one sweep per candidate group.

    Same contract as ``perplexity.removal_perplexities``. Block ``i`` runs on the full-model stream and on
    every live candidate stream, batched into calls of up to :data:`TOKENS_PER_CALL` tokens.

    Returns:
        ({block: perplexity}, perplexity with only ``skip`` removed).
    """
    model, n = stream.model, len(stream.blocks.layers)
    entries = _entries(stream, ids, batch_size)
    per_candidate = ids.numel() * model.config.get_text_config().hidden_size * _itemsize(stream)
    fit = max(1, int(available_bytes(str(stream.device)) // 4 // max(per_candidate, 1)))
    groups = [candidates[s:s + fit] for s in range(0, len(candidates), fit)] or [[]]
    steps = len(groups) * (n - len(skip))
    out: dict[int, float] = {}
    base = None
    done = 0
    for group in groups:
        main = [hidden for _, hidden, _ in entries]
        streams: dict[int, list[torch.Tensor]] = {}
        for i in range(n):
            if i in skip:
                continue
            units = [(None, j) for j in range(len(entries))] + [(c, j) for c in streams for j in range(len(entries))]
            current = {(c, j): (main[j] if c is None else streams[c][j]) for c, j in units}
            result = _run_units(stream, i, ids, entries, units, current)
            if i in group:
                streams[i] = list(main)  # "block i removed" continues from block i's input
            main = [result[(None, j)] for j in range(len(entries))]
            for c in list(streams):
                if c != i:
                    streams[c] = [result[(c, j)] for j in range(len(entries))]
            done += 1
            if progress:
                progress(done, steps)
        base = _ppl(model, ids, entries, main)
        out.update({c: _ppl(model, ids, entries, streams[c]) for c in group})
    return out, base


def _itemsize(stream: WeightStream) -> int:
    return next(p for p in stream.model.parameters() if not p.is_meta).element_size()


def _run_units(stream, i, ids, entries, units, current) -> dict:
    """Block ``i`` on every unit (stream, row chunk), units batched together up to TOKENS_PER_CALL tokens."""
    tokens = max(entries[0][1].shape[0] * ids.shape[1], 1)
    per_call = max(1, TOKENS_PER_CALL // tokens)
    result = {}
    with torch.no_grad(), stream.block(i) as block:
        for s in range(0, len(units), per_call):
            batch = units[s:s + per_call]
            if len(batch) == 1:
                (c, j), = batch
                result[(c, j)] = run_block(block, current[(c, j)], entries[j][2][i])
                continue
            batch_ids = torch.cat([ids[entries[j][0]] for _, j in batch])
            _, calls = capture_calls(stream.model, batch_ids, i)  # masks and positions for the batched rows
            outs = run_block(block, torch.cat([current[u] for u in batch]), calls[i])
            for u, o in zip(batch, outs.split([current[u].shape[0] for u in batch])):
                result[u] = o
    return result


def _ppl(model, ids, entries, finals) -> float:
    total, count = 0.0, 0
    for (rows, _, _), hidden in zip(entries, finals):
        nll, k = nll_sum(head_logits(model, ids[rows], hidden), ids[rows])
        total, count = total + nll, count + k
    return perplexity(total, count)


def ppl_sweep(stream: WeightStream, ctx: ScoreContext) -> ScoreResult:
    """``ppl`` in one sweep (see :func:`removal_sweep`)."""
    ppl, base = removal_sweep(stream, ctx.input_ids, ctx.candidates, batch_size=ctx.batch_size,
                              progress=ctx.progress)
    scores = [ppl.get(i) for i in range(ctx.num_blocks)]
    return ScoreResult(scores, order_by_score(scores, ctx.candidates), {"baseline_ppl": base})


def sleb_sweeps(stream: WeightStream, ctx: ScoreContext) -> ScoreResult:
    """``sleb``: the in-memory greedy search, each step one :func:`removal_sweep`."""
    def removal(candidates, skip, progress=None):
        # The search counts work in candidates; a sweep advances in blocks: report the same fraction.
        def blocks_done(done, total):
            if progress:
                progress(len(candidates) * done // total, len(candidates))
        return removal_sweep(stream, ctx.input_ids, candidates, skip=skip, batch_size=ctx.batch_size,
                             progress=blocks_done)
    return sleb_search(ctx, removal)


def taylor_sweep(stream: WeightStream, ctx: ScoreContext) -> ScoreResult:
    """``taylor``: forward sweep keeping block inputs, loss gradient at the top, reverse sweep per block; in
    float32 whatever the model's dtype, as in memory (embeddings and head upcast, blocks read as float32)."""
    with float32_weights(stream.model):
        values = _taylor_values(stream, ctx)
    scores = [values[i] if i in ctx.candidates else None for i in range(ctx.num_blocks)]
    return ScoreResult(scores, order_by_score(scores, ctx.candidates))


def _taylor_values(stream: WeightStream, ctx: ScoreContext) -> list[float]:
    n, ids = ctx.num_blocks, ctx.input_ids
    inputs: list[list[torch.Tensor]] = []

    def visit(i, x_in, x_out):
        inputs.append(x_in)
        if i == n - 1:
            inputs.append(x_out)

    calls = _forward(stream, ids, ctx.batch_size, ctx, visit, total=2 * n)
    rows = row_chunks(ids.shape[0], ctx.batch_size)
    grads = []
    for j, r in enumerate(rows):
        top = inputs[n][j].detach().requires_grad_(True)
        with torch.enable_grad(), continue_from(stream.model, top):
            calibration_loss(stream.model, ids[r]).backward()
        grads.append(top.grad)
    values = [0.0] * n
    for i in reversed(range(n)):
        with torch.enable_grad(), stream.block(i, trainable=True) as block:
            for j in range(len(rows)):
                x = inputs[i][j].detach().requires_grad_(i > 0)
                run_block(block, x, calls[j][i]).backward(grads[j])
                grads[j] = x.grad
            values[i] = taylor_importance(((p, p.grad) for p in block.parameters() if p.grad is not None),
                                          ctx.norm)
        inputs[i + 1] = []
        ctx.progress(2 * n - i, 2 * n)
    return values


SWEEPS = {"bi": bi_sweep, "angular": angular_sweep, "magnitude": magnitude_sweep, "ppl": ppl_sweep,
          "sleb": sleb_sweeps, "taylor": taylor_sweep, "taylor+": taylor_sweep}


def run_layerwise(stream: WeightStream, criterion: Criterion, ctx: ScoreContext) -> ScoreResult:
    """Run ``criterion`` layer by layer over ``stream`` (``ctx.model`` is the stream's skeleton).

    Raises:
        BlockSelectionError: for a criterion with no layer-by-layer form.
    """
    if criterion.name == "chop":
        return criterion.run(ctx)  # needs neither weights nor data
    if criterion.name not in SWEEPS:
        raise BlockSelectionError(f"criterion '{criterion.name}' cannot run layer by layer",
                                  f"pass --no-offload, or use one of {', '.join(['chop', *SWEEPS])}")
    if ctx.input_ids is not None:
        ctx.input_ids = ctx.input_ids.to(stream.device)
    return SWEEPS[criterion.name](stream, ctx)


