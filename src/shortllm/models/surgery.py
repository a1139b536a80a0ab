"""Block surgery: remove transformer blocks so the result is a plain, consistent Hugging Face model.

After :func:`keep_blocks` the model (DESIGN.md "Block surgery invariants")
1. computes exactly what the original computes with the removed blocks skipped,
2. generates with a KV cache (every ``layer_idx`` renumbered 0..k-1),
3. has a consistent config (layer count and every per-layer list filtered to the kept blocks),
4. saves and reloads with stock ``AutoModelForCausalLM``,
5. records provenance in ``config.shortllm`` (new index -> original index).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shortllm.errors import BlockSelectionError
from shortllm.models.arch import blocks_of

log = logging.getLogger(__name__)

# Config lists that can have the layer count's length by coincidence but are not per-layer.
_NOT_PER_LAYER = {"architectures", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
                  "eos_token_id", "forced_decoder_ids", "id2label", "label2id"}
# Attributes modules use to remember their block index (for caches and per-layer behaviour).
_INDEX_ATTRS = ("layer_idx", "layer_id", "layer_number")


def validate_indices(indices: Iterable[int], num_blocks: int, *, what: str = "block") -> list[int]:
    """Check block indices: integers in range, no duplicates. Returns them sorted.

    Raises:
        BlockSelectionError: on a negative, out-of-range or duplicated index.
    """
    seen: set[int] = set()
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int):
            raise BlockSelectionError(f"{what} index {i!r} is not an integer")
        if i < 0 or i >= num_blocks:
            raise BlockSelectionError(
                f"{what} index {i} is out of range", f"this model has blocks 0..{num_blocks - 1}"
            )
        if i in seen:
            raise BlockSelectionError(f"{what} index {i} is given twice")
        seen.add(i)
    return sorted(seen)


def original_indices(config: Any, num_blocks: int) -> list[int]:
    """Original block index of each current block (identity unless the model was pruned before)."""
    meta = getattr(config, "shortllm", None)
    if isinstance(meta, dict) and len(meta.get("kept_blocks", [])) == num_blocks:
        return list(meta["kept_blocks"])
    return list(range(num_blocks))


def filter_per_layer(config: Any, keep: Sequence[int], old_count: int, known_keys: Iterable[str] = ()) -> list[str]:
    """Filter every per-layer list of ``config`` (and of nested sub-configs) to ``keep``, in place.

    A field is per-layer if the architecture table names it or if it is a list/tuple of length
    ``old_count``. Returns the names of the filtered fields.
    """
    filtered = []
    known = set(known_keys)
    for key, value in list(vars(config).items()):
        if key.startswith("_") or key in _NOT_PER_LAYER:
            continue
        if isinstance(value, (list, tuple)) and len(value) == old_count and (key in known or old_count > 1):
            setattr(config, key, type(value)(value[i] for i in keep))
            filtered.append(key)
    return filtered


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
        The same model object, now with ``len(keep)`` blocks.

    Raises:
        BlockSelectionError: for bad indices or an empty selection.
    """
    import torch.nn as nn

    blocks = blocks_of(model)
    old_count = len(blocks.layers)
    keep = validate_indices(list(keep), old_count)
    if not keep:
        raise BlockSelectionError(
            f"removing all {old_count} blocks leaves no model", "keep at least one block"
        )
    config = model.config
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) and keep != list(range(len(keep))):
        # GPT-2's optional 1/(layer_idx+1) attention scale is fixed by position: a moved block would be
        # rescaled on reload, so the saved model could not compute what the pruned one does.
        raise BlockSelectionError(
            "this model scales attention by its block index (scale_attn_by_inverse_layer_idx), "
            "so only trailing blocks can be removed exactly",
            f"remove only the last blocks, e.g. --blocks {old_count - 1}",
        )
    origin = original_indices(config, old_count)
    new_layers = nn.ModuleList([blocks.layers[i] for i in keep])
    for new_index, block in enumerate(new_layers):
        _renumber(block, new_index)
    setattr(blocks.parent, blocks.attr, new_layers)

    setattr(config, blocks.layer_count_key, len(keep))
    filtered = filter_per_layer(config, keep, old_count, blocks.per_layer_keys)
    # Sub-configs some families keep beside the top-level one (e.g. generation settings) are untouched;
    # a text_config of a composite model carries its own layer count.
    text_config = getattr(config, "text_config", None)
    if text_config is not None and getattr(text_config, blocks.layer_count_key, None) == old_count:
        setattr(text_config, blocks.layer_count_key, len(keep))
        filtered += [f"text_config.{k}" for k in filter_per_layer(text_config, keep, old_count, blocks.per_layer_keys)]
    original_count = config.shortllm.get("original_num_blocks", old_count) if isinstance(
        getattr(config, "shortllm", None), dict) else old_count
    config.shortllm = {
        "original_num_blocks": original_count,
        "kept_blocks": [origin[i] for i in keep],
    }
    if filtered:
        log.debug("filtered per-layer config fields: %s", ", ".join(filtered))
    return model


def drop_blocks(model: Any, indices: Iterable[int]) -> Any:
    """Remove the blocks ``indices`` (current indices) from ``model`` in place; see :func:`keep_blocks`.

    Raises:
        BlockSelectionError: for bad, duplicated or out-of-range indices, or removing every block.
    """
    count = len(blocks_of(model).layers)
    drop = set(validate_indices(list(indices), count))
    if len(drop) == count:
        raise BlockSelectionError(
            f"removing all {count} blocks leaves no model", "keep at least one block"
        )
    return keep_blocks(model, [i for i in range(count) if i not in drop])


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of a model (tied weights counted once)."""

    total: int
    per_block: list[int]
    embeddings: int  # input embeddings (and learned position embeddings)
    head: int  # output projection when not tied to the embeddings
    other: int  # final norms and anything else outside the blocks

    @property
    def blocks(self) -> int:
        return sum(self.per_block)


def count_params(model: Any) -> ParamCount:
    """Count parameters: total, per block, embeddings, untied head, rest. Works on the meta device."""
    blocks = blocks_of(model)
    seen: set[int] = set()

    def numel(params: Iterable[Any]) -> int:
        n = 0
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    per_block = [numel(b.parameters()) for b in blocks.layers]
    embeddings = numel(model.get_input_embeddings().parameters())
    for name, module in model.named_modules():
        # Learned absolute position embeddings (gpt2 wpe, opt embed_positions) belong with the embeddings.
        if name.rsplit(".", 1)[-1] in ("wpe", "embed_positions") and not list(module.children()):
            embeddings += numel(module.parameters())
    out = model.get_output_embeddings()
    head = numel(out.parameters()) if out is not None else 0
    other = numel(model.parameters())
    total = sum(per_block) + embeddings + head + other
    return ParamCount(total=total, per_block=per_block, embeddings=embeddings, head=head, other=other)
