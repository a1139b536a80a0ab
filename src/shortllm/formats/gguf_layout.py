"""GGUF metadata tied to block positions, and how a cut rewrites it (pure: plain Python values in and out).

A GGUF names its blocks' tensors ``blk.{i}.*`` and describes them in ``{arch}.*`` metadata. After keeping the
blocks ``keep`` (in order) the metadata must say the same thing about the same blocks:

- ``{arch}.block_count`` becomes ``len(keep)``;
- per-block arrays (one entry per block: head counts, feed-forward lengths, a per-block sliding-window
  pattern, ...; the keys ``gguf.Keys`` defines as ``int | Sequence`` per layer) are filtered to ``keep``;
- layer-index scalars are renumbered (``leading_dense_block_count``: the kept blocks among the leading dense
  ones; ``nextn_predict_layers``: the kept blocks among the trailing MTP ones) or, where a runtime derives
  something shortllm cannot restate (shared KV layers, per-layer-input embeddings, DeepStack injection
  points, interleave steps), the cut is refused by name -- never written stale;
- an array of the block count's length that is not known either way is refused (it may be per block).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gguf import Keys

from shortllm.errors import BlockSelectionError, UnsupportedArchitectureError

BLOCK_COUNT = Keys.LLM.BLOCK_COUNT

# One entry per block when stored as an array (a scalar applies to every block and is kept as is).
PER_BLOCK_KEYS: tuple[str, ...] = (
    Keys.LLM.FEED_FORWARD_LENGTH, Keys.Attention.HEAD_COUNT, Keys.Attention.HEAD_COUNT_KV,
    Keys.Attention.SLIDING_WINDOW_PATTERN, Keys.LLM.ACTIVATION_SPARSITY_SCALE, Keys.LLM.SWIGLU_CLAMP_EXP,
    Keys.LLM.SWIGLU_CLAMP_SHEXP, Keys.xIELU.ALPHA_P, Keys.xIELU.ALPHA_N, Keys.xIELU.BETA, Keys.xIELU.EPS,
)
# Arrays that are never per block even when their length happens to equal the block count.
NOT_PER_BLOCK_KEYS: tuple[str, ...] = (Keys.Rope.DIMENSION_SECTIONS, Keys.Classifier.OUTPUT_LABELS)
NOT_PER_BLOCK_PREFIXES = ("general.", "tokenizer.", "clip.", "split.", "adapter.", "imatrix.", "GGUF.")

# Blocks [0, v) are special (dense FFN before the MoE blocks): the kept ones stay first, so v -> their count.
LEADING_COUNT_KEYS: tuple[str, ...] = (Keys.LLM.LEADING_DENSE_BLOCK_COUNT,)
# Blocks [n - v, n) are special (multi-token-prediction heads counted in block_count): kept ones stay last.
TRAILING_COUNT_KEYS: tuple[str, ...] = (Keys.LLM.NEXTN_PREDICT_LAYERS,)
# Index-derived behaviour shortllm does not restate: refused when set to a value that matters.
REFUSED_KEYS: dict[str, str] = {
    Keys.Attention.SHARED_KV_LAYERS: "the last blocks reuse the KV cache of earlier ones by position",
    Keys.LLM.EMBD_LENGTH_PER_LAYER_INP: "a per-layer input embedding has one slice per block outside blk.*",
    Keys.LLM.ALTUP_NUM_INPUTS: "AltUp state is laid out by block",
    Keys.LLM.INTERLEAVE_MOE_LAYER_STEP: "MoE blocks are chosen by index ((i + 1) % step == 0)",
    Keys.LLM.MOE_EVERY_N_LAYERS: "MoE blocks are chosen by index",
    Keys.LLM.FULL_ATTENTION_INTERVAL: "full-attention blocks are chosen by index, the others are recurrent",
    Keys.LLM.RESCALE_EVERY_N_LAYERS: "activations are rescaled every n blocks by index",
    Keys.LLM.DECODER_BLOCK_COUNT: "an encoder-decoder model has a second stack of blocks",
}
# Blocks [0, v) receive extra inputs (Qwen3-VL DeepStack): fine as long as none of them is removed.
LEADING_FIXED_KEYS: tuple[str, ...] = (Keys.LLM.NUM_DEEPSTACK_LAYERS,)


def _key(template: str, arch: str) -> str:
    return template.format(arch=arch)


def _is_array(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _matters(value: Any) -> bool:
    return not (value is None or value is False or value == 0 or (_is_array(value) and not value))


def metadata_changes(arch: str, metadata: Mapping[str, Any], keep: Sequence[int],
                     num_blocks: int) -> dict[str, Any]:
    """The metadata values that keeping ``keep`` of ``num_blocks`` blocks changes (new values by key).

    Args:
        arch: ``general.architecture``.
        metadata: every key of the source file with its plain value (lists for arrays).
        keep: kept block indices, sorted, at least one.
        num_blocks: ``{arch}.block_count`` of the source.

    Returns:
        ``{key: new value}``; keys not listed are copied unchanged.

    Raises:
        BlockSelectionError: a cut that removes blocks an index key fixes (DeepStack injection points).
        UnsupportedArchitectureError: index metadata shortllm cannot restate, or an array of the block
            count's length whose meaning is unknown (named, with what to do).
    """
    kept = set(keep)
    changes: dict[str, Any] = {_key(BLOCK_COUNT, arch): len(keep)}
    per_block = {_key(k, arch) for k in PER_BLOCK_KEYS}
    for name, value in metadata.items():
        if name in per_block and _is_array(value):
            if len(value) != num_blocks:
                raise UnsupportedArchitectureError(
                    f"GGUF metadata {name} has {len(value)} entries for {num_blocks} blocks",
                    "the file is inconsistent; re-convert it with llama.cpp",
                )
            changes[name] = [value[i] for i in keep]
    for template in LEADING_COUNT_KEYS:
        value = metadata.get(_key(template, arch))
        if isinstance(value, int) and value > 0:
            changes[_key(template, arch)] = sum(1 for i in keep if i < value)
    for template in TRAILING_COUNT_KEYS:
        value = metadata.get(_key(template, arch))
        if isinstance(value, int) and value > 0:
            changes[_key(template, arch)] = sum(1 for i in keep if i >= num_blocks - value)
    for template in LEADING_FIXED_KEYS:
        value = metadata.get(_key(template, arch))
        if isinstance(value, int) and value > 0 and any(i not in kept for i in range(min(value, num_blocks))):
            raise BlockSelectionError(
                f"blocks 0-{value - 1} of this GGUF receive extra inputs by position ({_key(template, arch)}="
                f"{value}), so none of them can be removed", f"keep blocks 0-{value - 1}",
            )
    refused = [f"{_key(t, arch)}={metadata[_key(t, arch)]!r} ({why})" for t, why in REFUSED_KEYS.items()
               if _matters(metadata.get(_key(t, arch)))]
    if refused:
        raise UnsupportedArchitectureError(
            f"this '{arch}' GGUF ties behaviour to block positions that shortllm cannot rewrite: "
            + "; ".join(refused),
            "prune the Hugging Face checkpoint instead and convert it with llama.cpp",
        )
    known = per_block | {_key(k, arch) for k in NOT_PER_BLOCK_KEYS}
    unknown = [name for name, value in metadata.items()
               if _is_array(value) and len(value) == num_blocks and num_blocks > 1 and name not in known
               and not name.startswith(NOT_PER_BLOCK_PREFIXES)]
    if unknown:
        raise UnsupportedArchitectureError(
            f"GGUF metadata {', '.join(unknown)} has one entry per block, and shortllm does not know whether it "
            "describes the blocks (it would be written stale)",
            "report the key to shortllm (formats/gguf_layout.py PER_BLOCK_KEYS)",
        )
    return changes


def renumbered(name: str, keep_index: Mapping[int, int]) -> str | None:
    """The name of tensor ``name`` after the cut: ``blk.{new}.rest`` for a kept block, None for a removed one,
    the name itself outside the blocks."""
    if not name.startswith("blk."):
        return name
    head, _, rest = name[4:].partition(".")
    if not head.isdigit():
        return name
    new = keep_index.get(int(head))
    return None if new is None else f"blk.{new}.{rest}"


def block_of(name: str) -> int | None:
    """The block index of a ``blk.{i}.*`` tensor name, else None."""
    if not name.startswith("blk."):
        return None
    head = name[4:].partition(".")[0]
    return int(head) if head.isdigit() else None
