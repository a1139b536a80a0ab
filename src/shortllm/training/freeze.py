"""Partial-layer training: ``--train-blocks SPEC`` and ``--train-head`` freeze every other parameter.

"Reassessing Layer Pruning in LLMs" (Lu et al. 2024, arXiv 2411.15558) finds that after removing blocks,
fine-tuning only the last few blocks and the head ("partial-layer fine-tuning") heals as well as LoRA or
full fine-tuning, for a fraction of the memory: a frozen parameter has no gradient and no optimizer state.

SPEC (indices are the pruned model's own, 0-based):

* ``last:N`` / ``first:N`` -- the last / first N blocks;
* ``around-cuts:N`` -- the N kept blocks on each side of every place blocks were removed (from the provenance
  ``prune`` records in ``config.shortllm``);
* ``from-cut:N`` -- every block from the first place blocks were removed on, and the N kept blocks before it
  (N >= 0). Without ``--train-head``, kd's teacher then takes the frozen blocks' output from the student
  instead of computing them (``training/objectives/forward.py: shared_prefix``): each step skips their backward pass
  and the teacher's forward through them;
* ``3,7,10-12`` -- these blocks; ``all`` -- every block.

``--train-head``: the output head and every other parameter outside the blocks that is not an input
embedding (the final norm). With tied embeddings (SmolLM2, Gemma) the head *is* the input embedding matrix,
so it trains too.
"""

from __future__ import annotations

import re
from typing import Any

from shortllm.errors import TrainingError

_NAMED = re.compile(r"^(last|first|around-cuts|from-cut):(\d+)$")
_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
HINT = "write e.g. --train-blocks last:3, first:2, around-cuts:1, from-cut:0, 3,7,10-12 or all"


def check_spec(spec: str) -> None:
    """Check the syntax of a ``--train-blocks`` SPEC (before any model loads).

    Raises:
        TrainingError: a SPEC that is none of the forms of the module docstring, or a count below 1.
    """
    s = spec.replace(" ", "")
    m = _NAMED.match(s)
    if m:
        if int(m.group(2)) < (0 if m.group(1) == "from-cut" else 1):
            raise TrainingError(f"--train-blocks {spec}: the count must be at least 1", HINT)
        return
    if s == "all" or _LIST.match(s):
        return
    raise TrainingError(f"--train-blocks '{spec}' is not a block list", HINT)


def cuts_of(kept: list[int], original_count: int) -> list[int]:
    """Where blocks were removed, as positions ``p`` in the pruned model (a cut lies before block ``p``;
    ``p == len(kept)``: after the last block).

    >>> cuts_of([0, 1, 4, 5], 7)
    [2, 4]
    """
    cuts = []
    previous = -1
    for p, orig in enumerate(kept):
        if orig != previous + 1:
            cuts.append(p)
        previous = orig
    if kept and kept[-1] != original_count - 1:
        cuts.append(len(kept))
    return cuts


def resolve_blocks(spec: str, config: Any, num_blocks: int) -> list[int]:
    """The blocks a SPEC names in a model of ``num_blocks`` blocks (sorted, each once).

    Raises:
        TrainingError: a bad SPEC, an index out of range, ``around-cuts`` or ``from-cut`` on a model without
            pruning provenance, ``from-cut:0`` on a model cut only at its end (it would name no block).
    """
    check_spec(spec)
    s = spec.replace(" ", "")
    m = _NAMED.match(s)
    if s == "all":
        return list(range(num_blocks))
    if m:
        kind, n = m.group(1), int(m.group(2))
        if kind == "last":
            return list(range(max(0, num_blocks - n), num_blocks))
        if kind == "first":
            return list(range(min(n, num_blocks)))
        meta = getattr(config, "shortllm", None)
        if not isinstance(meta, dict) or len(meta.get("kept_blocks", [])) != num_blocks:
            raise TrainingError(f"--train-blocks {spec} needs to know where blocks were removed, and this model "
                                "records no pruning provenance (config.shortllm)",
                                "use a folder written by shortllm prune, or name the blocks (last:3, 3,7)")
        cuts = cuts_of(list(meta["kept_blocks"]), int(meta.get("original_num_blocks", num_blocks)))
        if kind == "from-cut":
            if not cuts:
                raise TrainingError(f"--train-blocks {spec}: this model's provenance records no removed block",
                                    "name the blocks instead (last:3, 3,7)")
            chosen_blocks = list(range(max(0, cuts[0] - n), num_blocks))
            if not chosen_blocks:
                raise TrainingError(f"--train-blocks {spec}: blocks were removed only after the last kept block, so "
                                    "nothing follows the first cut", "write from-cut:N with N >= 1, or last:N")
            return chosen_blocks
        chosen: set[int] = set()
        for cut in cuts:
            chosen.update(i for i in range(cut - n, cut + n) if 0 <= i < num_blocks)
        return sorted(chosen)
    chosen = set()
    for part in s.split(","):
        a, _, b = part.partition("-")
        lo, hi = int(a), int(b or a)
        if lo > hi or hi >= num_blocks:
            raise TrainingError(f"--train-blocks {spec}: '{part}' is outside blocks 0..{num_blocks - 1}", HINT)
        chosen.update(range(lo, hi + 1))
    return sorted(chosen)


def freeze_except(model: Any, blocks: list[int] | None, train_head: bool) -> dict[str, Any]:
    """Set ``requires_grad`` so that only ``blocks`` (None: every block) and, with ``train_head``, the head train.

    Returns:
        ``{"blocks", "head", "trainable_params", "frozen_params"}`` for the manifest (each tensor counted once).
    """
    import torch.nn as nn

    from shortllm.models.arch import blocks_of

    layers = blocks_of(model).layers
    in_blocks = {id(p) for layer in layers for p in layer.parameters()}
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_params = {id(p) for p in head.parameters()} if head is not None else set()
    chosen = range(len(layers)) if blocks is None else blocks
    train = {id(p) for i in chosen for p in layers[i].parameters()}
    if train_head:
        train |= head_params
        train |= {id(p) for p in model.parameters() if id(p) not in in_blocks and id(p) not in embeddings}
    seen: dict[int, Any] = {}
    for p in model.parameters():
        seen[id(p)] = p
    for key, p in seen.items():
        p.requires_grad_(key in train)
    trainable = sum(p.numel() for k, p in seen.items() if k in train)
    total = sum(p.numel() for p in seen.values())
    return {"blocks": list(chosen), "head": train_head, "trainable_params": trainable,
            "frozen_params": total - trainable}
