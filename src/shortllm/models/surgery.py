"""Block surgery: remove transformer blocks so the result is a plain, consistent Hugging Face model.

After :func:`keep_blocks` the model (DESIGN.md "Block surgery invariants")
1. computes exactly what the original computes with the removed blocks skipped,
2. generates with a KV cache (every ``layer_idx`` renumbered 0..k-1),
3. has a consistent config (:func:`rewrite_config`: the layer count, and every config field tied to block
   positions rewritten for the kept blocks, or the cut refused by name),
4. saves and reloads with stock ``AutoModelForCausalLM`` (a multimodal checkpoint with its own class,
   ``AutoModelForImageTextToText``; only its language blocks are removed, the vision tower is untouched),
5. records provenance in ``config.shortllm`` (new index -> original index).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shortllm.errors import BlockSelectionError
from shortllm.models.arch import blocks_of
from shortllm.models.config_rewrite import rewrite_config, validate_indices
from shortllm.wording import plural

# Attributes modules use to remember their block index (for caches and per-layer behaviour).
_INDEX_ATTRS = ("layer_idx", "layer_id", "layer_number")


def _renumber(block: Any, new_index: int) -> None:
    for module in block.modules():
        for attr in _INDEX_ATTRS:
            if isinstance(getattr(module, attr, None), int) and not isinstance(getattr(module, attr), bool):
                setattr(module, attr, new_index)


def keep_blocks(model: Any, keep: Iterable[int]) -> Any:
    """Keep only the blocks ``keep`` (current indices) of ``model``, in order; modifies it in place.

    Args:
        model: a Hugging Face ``*ForCausalLM`` model.
        keep: indices of the blocks to keep; at least one.

    Returns:
        The same model object, now with ``len(keep)`` blocks and its config rewritten by
        :func:`rewrite_config`.

    Raises:
        BlockSelectionError: for bad indices, an empty selection, or a cut the config cannot state.
        UnsupportedArchitectureError: see :func:`rewrite_config`.
    """
    import torch.nn as nn

    blocks = blocks_of(model)
    old_count = len(blocks.layers)
    keep = validate_indices(list(keep), old_count)
    rewrite_config(model.config, keep, old_count)  # refuses before the model is touched
    new_layers = nn.ModuleList([blocks.layers[i] for i in keep])
    for new_index, block in enumerate(new_layers):
        _renumber(block, new_index)
    setattr(blocks.parent, blocks.attr, new_layers)
    return model


def drop_blocks(model: Any, indices: Iterable[int]) -> Any:
    """Remove the blocks ``indices`` (current indices) from ``model`` in place; see :func:`keep_blocks`.

    Raises:
        BlockSelectionError: for bad, duplicated or out-of-range indices, removing every block, or a cut
            the config cannot state.
        UnsupportedArchitectureError: see :func:`rewrite_config`.
    """
    count = len(blocks_of(model).layers)
    drop = set(validate_indices(list(indices), count))
    if len(drop) == count:
        raise BlockSelectionError(
            f"removing all {plural(count, 'block')} leaves no model", "keep at least one block"
        )
    return keep_blocks(model, [i for i in range(count) if i not in drop])
