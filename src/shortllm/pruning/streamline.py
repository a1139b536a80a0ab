"""``prune --replace block``: one trained block in place of each contiguous removed run (LLM-Streamline).

LLM-Streamline (Chen et al., ICLR 2025, arXiv 2403.19135) removes a run of consecutive blocks and trains a
lightweight stand-in to map the run's input hidden states to its output hidden states (MSE on the original
model's activations). Here the stand-in is an ordinary block of the same architecture, so the output stays a
plain checkpoint that stock transformers loads (one block more than the pure cut per run):

* it sits in the slot of the run's **last** block, so the provenance ``prune`` records (``kept_blocks``) maps
  it to the original block whose output it learns to produce -- ``retrain --kd-hidden`` then matches it to
  exactly that teacher block;
* it starts from a chosen block's weights (:data:`shortllm.pruning.replace.INITS`: the run's last block, its first, or the kept block
  before the run) and is trained alone (every other parameter frozen) with AdamW on
  the mean over tokens of ``||block(X_s) - X_{e+1}||^2 / ||X_{e+1}||^2``, ``X_i`` the input of block ``i``
  in the original model on the calibration windows. A run that ends at the last block learns that block's
  output. The paper's loss is a plain MSE; normalising per token matters on real models: the first token's
  hidden state carries massive activations (on SmolLM2-135M its mean square is 14,000x the other tokens'), so a
  plain MSE spends the whole block on that one position and the cut got worse (WikiText-2 ppl 701 -> 497);
  ``--replace-objective mse`` keeps the paper's loss.

``--ratio`` counts the block that stays: the plan removes enough blocks that the net removal still stays
within the ratio (``Replacement.kept_back`` and :func:`shortllm.pruning.plan.fit_within_ratio`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from shortllm.errors import BlockSelectionError
from shortllm.pruning.replace import ReplaceOptions, runs_of, token_weights
from shortllm.wording import plural

log = logging.getLogger(__name__)

TRAIN_BATCH = 4  # calibration windows per AdamW step of a replacement block
SEED = 1234  # the order the windows are visited in


class _Stop(Exception):
    """Raised by the replacement's forward hook: nothing after it needs to run."""


def replacement_slots(removed: Sequence[int]) -> list[int]:
    """The block of each removed run that stays as its trained replacement: the run's last one."""
    return [last for _, last in runs_of(removed)]


def check_block(config: Any, removed: Sequence[int]) -> None:
    """``--replace block`` works on any architecture the block table knows; a run may start at block 0 (its
    input is the embeddings), but ``previous`` has nothing to start from there.

    Raises:
        BlockSelectionError: nothing to replace.
    """
    if not removed:
        raise BlockSelectionError("--replace block needs removed blocks", "give --blocks, --num-blocks or --ratio")


def block_inputs(model: Any, ids: Any, wanted: Sequence[int], batch_size: int,
                 progress: Callable[[int, int], None] = lambda d, t: None) -> dict[int, Any]:
    """``{i: [N, T, H]}`` the hidden state entering block ``i`` of the unchanged model for each ``i`` in
    ``wanted`` (``i == n``: the last block's output), kept on the CPU; nothing else is stored. Each forward stops
    at the last wanted block: the blocks after it and the head do not run (for the run 12-18 of a 30-block model
    that is 11 blocks and the vocabulary projection, about half the forward's work). ``progress(done, total)``
    counts windows."""
    import torch

    from shortllm.models.arch import blocks_of

    layers = blocks_of(model).layers
    n = len(layers)
    found: dict[int, list] = {i: [] for i in wanted}
    if not found:
        return {}
    progress(0, ids.shape[0])
    last = max(wanted)

    def pre(i):
        def hook(_module, args, kwargs):
            found[i].append((args[0] if args else kwargs["hidden_states"]).detach().to("cpu", copy=True))
            if i == last:
                raise _Stop
        return hook

    def post(_module, _args, output):
        found[n].append((output[0] if isinstance(output, (tuple, list)) else output).detach().to("cpu", copy=True))
        raise _Stop

    handles = [layers[i].register_forward_pre_hook(pre(i), with_kwargs=True) for i in wanted if i < n]
    if n in found:
        handles.append(layers[n - 1].register_forward_hook(post))
    try:
        with torch.no_grad():
            for start in range(0, ids.shape[0], batch_size):
                try:
                    model(ids[start:start + batch_size], use_cache=False)
                except _Stop:
                    pass
                progress(min(start + batch_size, ids.shape[0]), ids.shape[0])
    finally:
        for h in handles:
            h.remove()
    return {i: torch.cat(v) for i, v in found.items()}


def _train_slot(model: Any, layers: Any, slot: int, x: Any, y: Any, ids: Any, opts: ReplaceOptions,
                template: Any, tick: Callable[[], None] = lambda: None) -> tuple[float, float]:
    """Train ``layers[slot]`` to map ``x`` (the run's input) to ``y`` (its output); return the relative error
    before and after (:func:`block_replace`: per token for ``token``, per batch for ``mse``). ``tick()`` is
    called after every batch: :func:`slot_batches` of them."""
    import torch

    from shortllm.scoring.capture import bypass
    from shortllm.optim import adamw

    block = layers[slot]
    flags = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in block.parameters():
        p.requires_grad_(True)
    fed: dict[str, torch.Tensor] = {}

    def feed(_module, args, kwargs):
        if args:
            return (fed["x"], *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": fed["x"]}

    def stop(_module, _args, output):
        fed["out"] = output[0] if isinstance(output, (tuple, list)) else output
        raise _Stop

    handles = [block.register_forward_pre_hook(feed, with_kwargs=True), block.register_forward_hook(stop)]
    device = next(block.parameters()).device
    optimizer = adamw(block.parameters(), lr=opts.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(SEED)

    def run(rows):
        fed["x"] = x[rows].to(device)
        try:
            model(ids[rows].to(device), use_cache=False)
        except _Stop:
            pass
        out, target = fed.pop("out").float(), y[rows].to(device).float()
        out, target = out.reshape(-1, out.shape[-1]), target.reshape(-1, target.shape[-1])
        w = token_weights(target, opts.objective)
        # token: the mean over tokens of ||out - y||^2 / ||y||^2; mse: ||out - y||^2 / ||y||^2 over the batch
        return (w * (out - target) ** 2).sum() / (w * target ** 2).sum()

    def mean_error() -> float:
        parts = []
        with torch.no_grad():
            for i in range(0, len(ids), TRAIN_BATCH):
                parts.append(float(run(torch.arange(i, min(i + TRAIN_BATCH, len(ids))))) * min(TRAIN_BATCH,
                                                                                               len(ids) - i))
                tick()
        return sum(parts) / len(ids)

    was_training = model.training
    try:
        with bypass(model, skip=range(slot), template=template):  # blocks before the slot are not needed
            before = mean_error()
            model.train()
            for _ in range(opts.epochs):
                order = torch.randperm(len(ids), generator=gen)
                for i in range(0, len(ids), TRAIN_BATCH):
                    loss = run(order[i:i + TRAIN_BATCH])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    tick()
            model.train(was_training)
            after = mean_error()
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
            p.grad = None
    return before, after


def slot_batches(windows: int, epochs: int) -> int:
    """Batches one slot's training runs: ``epochs`` passes of :data:`TRAIN_BATCH` windows, plus the error
    measured over every window before and after (forward only)."""
    return (epochs + 2) * math.ceil(windows / TRAIN_BATCH)


def block_replace(ctx: Any) -> dict[str, Any]:
    """LLM-Streamline per removed run (module docstring); the model is changed in place, the slots stay.

    Args:
        ctx: a :class:`shortllm.pruning.replace.ReplaceContext` (model, calibration ``input_ids``, removed);
            ``ctx.options`` (:class:`shortllm.pruning.replace.ReplaceOptions`, checked by ``check_options``)
            gives the init, objective, epochs and learning rate; :data:`TRAIN_BATCH` windows per step.

    Returns:
        ``{"method", "objective", "kept_back", "tokens", "epochs", "lr", "runs": [{"blocks", "replaced_by",
        "init", "error_before", "error_after"}]}``; the errors are the slot's squared error against the run's
        output, before and after training, relative as the objective measures it: ``token``: each token's
        relative to that token's squared norm, averaged over tokens; ``mse``: each batch's relative to the
        batch's squared norm, averaged over rows.

    Raises:
        BlockSelectionError: ``previous`` for a run at block 0, or the training diverged.
    """
    from shortllm.models.arch import blocks_of
    from shortllm.scoring.capture import block_template

    opts = ctx.options
    check_block(ctx.model.config, ctx.removed)
    model, ids = ctx.model, ctx.input_ids
    layers = blocks_of(model).layers
    template = block_template(model)
    runs = runs_of(ctx.removed)
    # The original model's activations (every block present, nothing replaced yet), only where runs start and end.
    log.info("Running the original model over %d windows (hidden states where the removed runs start and end)",
             len(ids), extra={"phase": True})
    acts = block_inputs(model, ids, sorted({i for f, e in runs for i in (f, e + 1)}), max(1, ctx.batch_size),
                        ctx.progress)
    per_slot = slot_batches(len(ids), opts.epochs)
    total, done = per_slot * len(runs), 0
    log.info("Training %s (%d epochs of %d windows, %d batches in all)", plural(len(runs), "stand-in block"),
             opts.epochs, len(ids), total, extra={"phase": True})
    ctx.progress(0, total)

    def tick() -> None:
        nonlocal done
        done += 1
        ctx.progress(done, total)

    record = []
    for first, last in runs:
        source = {"last": last, "first": first, "previous": first - 1}[opts.init]
        if source < 0:
            raise BlockSelectionError(f"--replace block: the run {first}-{last} starts at block 0, so there is no "
                                      "kept block before it to start from", "use the run's own first or last block")
        if source != last:
            layers[last].load_state_dict(layers[source].state_dict())
        before, after = _train_slot(model, layers, last, acts[first], acts[last + 1], ids, opts, template, tick)
        record.append({"blocks": [first, last], "replaced_by": f"block {last}", "init": f"block {source}",
                       "folded_into": f"block {last} (trained, from block {source})",
                       "error_before": round(before, 6), "error_after": round(after, 6)})
        log.info("replacement block for %d-%d (in slot %d, from block %d): relative error (%s) %.4g -> %.4g",
                 first, last, last, source, opts.objective, before, after)
    if any(not math.isfinite(r["error_after"]) for r in record):
        raise BlockSelectionError("--replace block: training diverged (the error is not finite)",
                                  "prune without --replace, or use --replace linear")
    return {"method": "block", "objective": opts.objective, "kept_back": replacement_slots(ctx.removed),
            "tokens": int(ids.numel()),
            "epochs": opts.epochs, "lr": opts.lr, "runs": record}
