"""GGUF in, GGUF out: read a GGUF's layout, and write a pruned copy whose kept tensors are the source's bytes.

The writer never dequantizes: every kept tensor's raw data (Q4_K, Q8_0, ... whatever it is) and type are copied
as they are through ``gguf.GGUFWriter``; ``blk.{i}.*`` tensors of removed blocks are dropped and the kept ones
renumbered; the metadata is copied with the block-position keys rewritten (:mod:`shortllm.formats.gguf_layout`).
Everything else -- token embedding, output, output norm, rope factors, tokenizer, chat template, quantization
version -- is copied unchanged. The source file is only ever opened read-only (memory-mapped).

Reference: the GGUF format (ggml-org/ggml docs/gguf.md) and gguf-py's ``gguf_new_metadata.py``, which copies
a file field by field the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortllm.errors import ModelLoadError, UnsupportedArchitectureError, reason
from shortllm.formats.gguf_layout import BLOCK_COUNT, block_of, metadata_changes, renumbered

log = logging.getLogger(__name__)

_SPLIT_COUNT = "split.count"


@dataclass
class GGUFSource:
    """A GGUF opened for reading: the gguf-py reader, its architecture, block count and plain metadata."""

    path: Path
    reader: Any  # gguf.GGUFReader (memory-mapped, read-only)
    arch: str
    num_blocks: int
    metadata: dict[str, Any]


def _plain(value: Any) -> Any:
    """numpy scalars and lists -> Python values (what JSON and comparisons want)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def open_gguf(path: Path | str) -> GGUFSource:
    """Open ``path`` read-only and read its architecture, block count and metadata.

    Raises:
        ModelLoadError: not a readable GGUF, a split GGUF (``split.count`` > 1), no ``general.architecture`` or
            no ``{arch}.block_count``.
    """
    from gguf import GGUFReader

    path = Path(path).expanduser()
    try:
        reader = GGUFReader(path, "r")
    except (OSError, ValueError) as err:
        detail = reason(err, 160)
        raise ModelLoadError(f"cannot read {path} as a GGUF ({detail})", "check the file") from err
    metadata = {name: _plain(field.contents()) for name, field in reader.fields.items()
                if not name.startswith("GGUF.")}
    if int(metadata.get(_SPLIT_COUNT) or 1) > 1:
        raise ModelLoadError(f"{path} is one shard of a split GGUF ({metadata[_SPLIT_COUNT]} shards)",
                             "merge it first with llama.cpp's llama-gguf-split --merge")
    arch = metadata.get("general.architecture")
    count = metadata.get(BLOCK_COUNT.format(arch=arch)) if isinstance(arch, str) else None
    if not isinstance(arch, str) or not isinstance(count, int):
        raise ModelLoadError(f"{path} has no general.architecture / block_count metadata",
                             "pass a GGUF model written by llama.cpp's converter")
    source = GGUFSource(path, reader, arch, count, metadata)
    check_blocks(source)
    return source


def check_blocks(source: GGUFSource) -> None:
    """Refuse a GGUF whose blocks are incomplete or inconsistent, as loading refuses an incomplete Hugging Face
    checkpoint: ``blk.{i}`` tensors for exactly the blocks ``block_count`` states, and no block holding a strict
    subset of another block's tensors (a tensor missing: llama.cpp fails on it at load, or worse). Blocks of
    different kinds (dense and mixture-of-experts blocks, attention and recurrent blocks) hold different sets,
    never one inside another, and pass.

    Raises:
        ModelLoadError: naming the first missing block or tensor.
    """
    parts: dict[int, set[str]] = {}
    for tensor in source.reader.tensors:
        i = block_of(tensor.name)
        if i is not None:
            parts.setdefault(i, set()).add(tensor.name.split(".", 2)[2])
    n, hint = source.num_blocks, "the file is incomplete or inconsistent: convert or download it again"
    beyond = sorted(i for i in parts if i >= n)
    if beyond:
        raise ModelLoadError(f"{source.path} has tensors of block {beyond[0]} but its {source.arch}.block_count is "
                             f"{n}", hint)
    absent = [i for i in range(n) if i not in parts]
    if absent:
        raise ModelLoadError(f"{source.path} states {n} blocks ({source.arch}.block_count) but has no tensors for "
                             f"block{'s' if len(absent) > 1 else ''} {', '.join(map(str, absent[:5]))}", hint)
    # Blocks that differ by design are left out of the comparison: multi-token-prediction layers at the end
    # (nextn.*, counted in block_count) and no-op sub-layers (a per-block head count or feed-forward length of 0,
    # as in Nemotron-NAS / deci files).
    mtp = int(source.metadata.get(f"{source.arch}.nextn_predict_layers") or 0)
    regular = [i for i in range(n - mtp) if not _has_noop(source, i)]
    kinds = {frozenset(s for s in parts[i] if not s.startswith("nextn.")) for i in regular}
    for i in regular:
        fuller = next((k for k in kinds if parts[i] < k), None)
        if fuller is not None:
            missing = sorted(fuller - parts[i])
            raise ModelLoadError(f"{source.path} lacks blk.{i}.{missing[0]}"
                                 + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                                 + ", which other blocks have", hint)


def _has_noop(source: GGUFSource, block: int) -> bool:
    """Whether the per-block metadata says block ``block`` has no attention or no feed-forward (a 0 entry)."""
    for key in ("attention.head_count", "attention.head_count_kv", "feed_forward_length"):
        value = source.metadata.get(f"{source.arch}.{key}")
        if isinstance(value, list) and block < len(value) and value[block] == 0:
            return True
    return False


def tensor_counts(source: GGUFSource) -> tuple[list[int], int, int, int]:
    """Element counts by role: (per block, token embedding, untied output head, everything else).

    Raises:
        UnsupportedArchitectureError: a ``blk.{i}`` tensor beyond the block count.
    """
    per_block = [0] * source.num_blocks
    embeddings = head = other = 0
    for tensor in source.reader.tensors:
        n = int(tensor.n_elements)
        i = block_of(tensor.name)
        if i is not None:
            if i >= source.num_blocks:
                raise UnsupportedArchitectureError(
                    f"{source.path} has tensor {tensor.name} but only {source.num_blocks} blocks",
                    "the file is inconsistent; re-convert it with llama.cpp")
            per_block[i] += n
        elif tensor.name.startswith("token_embd."):
            embeddings += n
        elif tensor.name.startswith("output."):
            head += n
        else:
            other += n
    return per_block, embeddings, head, other


def param_count(source: GGUFSource) -> Any:
    """The source's :class:`~shortllm.models.params.ParamCount` from its tensor shapes (no dequantizing)."""
    from shortllm.models.params import ParamCount

    per_block, embeddings, head, other = tensor_counts(source)
    return ParamCount(total=sum(per_block) + embeddings + head + other, per_block=per_block,
                      embeddings=embeddings, head=head, other=other)


@dataclass(frozen=True)
class WriteSummary:
    """What :func:`write_pruned_gguf` wrote."""

    tensors_kept: int
    tensors_dropped: int
    bytes_copied: int
    metadata_changed: dict[str, Any]


def write_pruned_gguf(source: GGUFSource, dest: Path, keep: Sequence[int],
                      progress: Callable[[int, int], None] = lambda done, total: None) -> WriteSummary:
    """Write ``dest``: ``source`` with only the blocks ``keep`` (renumbered 0..k-1), tensor bytes copied as is.

    Args:
        source: from :func:`open_gguf`.
        dest: the file to write (a temporary path; the caller renames it into place).
        keep: kept block indices, sorted, at least one.
        progress: called with (bytes written, bytes to write).

    Returns:
        A :class:`WriteSummary`.

    Raises:
        BlockSelectionError, UnsupportedArchitectureError: see
            :func:`~shortllm.formats.gguf_layout.metadata_changes` (raised before ``dest`` is created).
    """
    from gguf import GGUFValueType, GGUFWriter

    changes = metadata_changes(source.arch, source.metadata, keep, source.num_blocks)
    index = {old: new for new, old in enumerate(keep)}
    kept = [(renumbered(t.name, index), t) for t in source.reader.tensors]
    kept = [(name, t) for name, t in kept if name is not None]
    writer = GGUFWriter(dest, source.arch, endianess=source.reader.endianess)
    writer.data_alignment = int(source.reader.alignment)
    for name, field in source.reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # the header counts and the architecture are written by GGUFWriter itself
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        value = changes[name] if name in changes else field.contents()
        writer.add_key_value(name, value, kind, sub_type=sub)
    for name, tensor in kept:
        writer.add_tensor_info(name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type)
    total = sum(int(t.data.nbytes) for _, t in kept)
    done = 0
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, tensor in kept:
            writer.write_tensor_data(tensor.data, tensor_endianess=source.reader.endianess)
            done += int(tensor.data.nbytes)
            progress(done, total)
    finally:
        writer.close()
    log.debug("wrote %s: %d tensors, %d bytes", dest, len(kept), total)
    return WriteSummary(len(kept), len(source.reader.tensors) - len(kept), total,
                        {k: v for k, v in changes.items() if source.metadata.get(k) != v})


__all__ = ["GGUFSource", "WriteSummary", "open_gguf", "param_count", "tensor_counts", "write_pruned_gguf"]
