"""Safetensors checkpoints read and written tensor by tensor, without ever holding a model in memory.

Out-of-core surgery (``pruning/out_of_core.py``) lists the tensors of a Hugging Face folder from the file
headers alone (:func:`list_tensors`), renames the kept blocks' tensors (:func:`rename_blocks`), and writes the
result shard by shard (:func:`write_checkpoint`) by copying each tensor's bytes from the source file into the
new one: peak memory is one copy buffer, whatever the model's size, and the copied tensors are bit-identical
by construction. :func:`verify_checkpoint` then checks the written folder against what was meant to be
written (every tensor exactly once, same dtypes and shapes), reading headers through ``safetensors.safe_open``.

The file format is the one ``safetensors`` specifies (https://github.com/huggingface/safetensors#format): an
8-byte little-endian header length N, N bytes of JSON (``{name: {"dtype", "shape", "data_offsets"}}``,
optional ``"__metadata__"``), then the tensors' bytes. The library's ``save_file`` needs every tensor of a
file in memory at once; writing the header ourselves (offsets are known from the source headers) lets each
tensor stream straight from disk to disk. Sharding and the index follow ``transformers``' ``save_pretrained``
(``model.safetensors`` alone, or ``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json``).
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shortllm.errors import ModelLoadError, OutputError, ShortLLMError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
# Like transformers' default ``max_shard_size`` (5.x).
DEFAULT_MAX_SHARD_SIZE = "50GB"
_COPY_CHUNK = 64 << 20  # bytes per read/write when the kernel cannot copy between files itself


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file, known from the header only.

    Attributes:
        name: the tensor's name in the file.
        file: the file holding it.
        dtype: the safetensors dtype name (``"BF16"``, ``"F32"``, ...).
        shape: the tensor's shape.
        start: absolute byte offset of its data in ``file``.
        nbytes: length of its data in bytes.
    """

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    nbytes: int


_MAX_HEADER = 100_000_000  # safetensors refuses longer headers itself


def read_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of one safetensors file, from its header (no tensor data is read).

    Raises:
        ModelLoadError: the file is not a readable safetensors file.
    """
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty (0 bytes)", "check that the download is complete")
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            actual = Path(path).stat().st_size
            if 8 + size > actual and size > _MAX_HEADER:  # a Git LFS pointer, a web page: not a header length
                raise ModelLoadError(
                    f"{path} is not a safetensors file (its first 8 bytes give a header of {size:,} bytes, longer "
                    "than the file: a Git LFS pointer or a web page?)",
                    "download the weights themselves (git lfs pull, or huggingface-cli download)")
            if 8 + size > actual:
                raise ModelLoadError(f"{path} is not a readable safetensors file (truncated inside its header: "
                                     f"{8 + size:,} bytes of header, {actual:,} in the file)",
                                     "check that the download is complete")
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError, UnicodeDecodeError, OverflowError, MemoryError) as err:
        raise ModelLoadError(f"{path} is not a readable safetensors file ({err})",
                             "check that the download is complete") from err
    base = 8 + size
    found = {}
    try:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            found[name] = TensorEntry(name, Path(path), info["dtype"], tuple(info["shape"]), base + begin,
                                      end - begin)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"{path} is not a readable safetensors file (bad header entry: {err})",
                             "check that the download is complete") from err
    # The data must cover what the header lists: a truncated download has an intact header and less data.
    covered = base + max((e.start - base + e.nbytes for e in found.values()), default=0)
    actual = Path(path).stat().st_size
    if actual < covered:
        raise ModelLoadError(f"{path} is truncated: its header lists {covered:,} bytes, the file has {actual:,}",
                             "check that the download is complete")
    return found


def check_weight_files(folder: Path) -> None:
    """Read the header of every safetensors file a folder's weights name and check each covers its tensors,
    so a damaged file (truncated, empty, bad header, a shard missing from the index) is named.

    Raises:
        ModelLoadError: naming the file and what is wrong with it.
    """
    files = weight_files(folder)
    for path in dict.fromkeys((files or {}).values()):
        read_header(path)


def weight_files(folder: Path) -> dict[str, Path] | None:
    """Which file holds each tensor of a Hugging Face folder, as ``from_pretrained`` would read it.

    Returns:
        ``{tensor name: file}`` from ``model.safetensors.index.json`` or the single ``model.safetensors``;
        None when the folder has neither (e.g. pickled ``.bin`` weights only, which are never read here).

    Raises:
        ModelLoadError: an unreadable index or an index naming a missing shard.
    """
    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelLoadError(f"cannot read {index}: {err}", "check that the download is complete") from err
        files = {name: folder / shard for name, shard in weight_map.items()}
        missing = sorted({str(p.name) for p in files.values() if not p.is_file()})
        if missing:
            raise ModelLoadError(f"{index} names missing shard(s): {', '.join(missing[:3])}",
                                 "check that the download is complete")
        return files
    single = folder / WEIGHTS_NAME
    if single.is_file():
        return {name: single for name in read_header(single)}
    return None


FLOAT_DTYPES = {"F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def stored_dtype(folder: Path) -> str | None:
    """The torch dtype name most of a folder's floating-point weights are stored in (by element count), read from
    the safetensors headers; None without safetensors weights or floating-point tensors. What ``--dtype auto``
    keeps: the stored tensors, not the config's ``dtype`` field, which can disagree with them."""
    tensors = list_tensors(folder)
    counts: dict[str, int] = {}
    for entry in (tensors or {}).values():
        if entry.dtype in FLOAT_DTYPES:
            n = 1
            for d in entry.shape:
                n *= d
            counts[entry.dtype] = counts.get(entry.dtype, 0) + n
    return FLOAT_DTYPES[max(counts, key=counts.get)] if counts else None


def list_tensors(folder: Path) -> dict[str, TensorEntry] | None:
    """Every tensor of a folder's safetensors weights, from the headers (see :func:`weight_files`).

    Returns:
        ``{name: entry}`` in file order, or None when the folder has no safetensors weights.

    Raises:
        ModelLoadError: an unreadable file, or a tensor the index names that its shard lacks.
    """
    files = weight_files(folder)
    if files is None:
        return None
    headers: dict[Path, dict[str, TensorEntry]] = {}
    for path in dict.fromkeys(files.values()):
        headers[path] = read_header(path)
    found = {}
    for name, path in files.items():
        entry = headers[path].get(name)
        if entry is None:
            raise ModelLoadError(f"{path.name} lacks the tensor {name} that the index lists",
                                 "check that the download is complete")
        found[name] = entry
    return found


def block_prefix(names: Iterable[str], candidates: Sequence[str], num_blocks: int) -> str | None:
    """The prefix under which a checkpoint stores its blocks (``model.layers``, ``h``, ...).

    Args:
        names: the tensor names of the checkpoint.
        candidates: prefixes to try first, in order (the architecture table's block path, then the same path
            without the base model's prefix, which checkpoints of the bare base model use: GPT-2's ``h``,
            OPT's ``decoder.layers``).
        num_blocks: the config's layer count; the prefix must carry blocks ``0 .. num_blocks - 1``.

    Returns:
        The first candidate whose ``{prefix}.{i}.`` names cover every block; else the one other prefix ending
        like the candidates (same last component, e.g. ``language_model.model.layers``) that does; else None.
    """
    seen: dict[str, set[int]] = {}
    for name in names:
        for match in re.finditer(r"\.(\d+)\.", name):
            seen.setdefault(name[: match.start()], set()).add(int(match.group(1)))
    wanted = set(range(num_blocks))
    covering = [p for p, found in seen.items() if wanted <= found]
    for candidate in candidates:
        if candidate in covering:
            return candidate
    tails = {c.rsplit(".", 1)[-1] for c in candidates}
    others = [p for p in covering if p.rsplit(".", 1)[-1] in tails]
    return others[0] if len(others) == 1 else None


def rename_blocks(names: Iterable[str], prefix: str, keep: Sequence[int]) -> dict[str, str]:
    """The new name of every tensor that survives keeping blocks ``keep`` (old indices, in order).

    ``{prefix}.{keep[j]}.rest`` becomes ``{prefix}.{j}.rest``; tensors of other blocks are dropped (blocks
    numbered past the config's count, such as DeepSeek-V3's multi-token-prediction block, are dropped too, as
    ``from_pretrained`` ignores them); tensors outside the blocks keep their names.

    Returns:
        ``{old name: new name}`` in the order of ``names``.
    """
    new_index = {old: new for new, old in enumerate(keep)}
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    renamed = {}
    for name in names:
        match = pattern.match(name)
        if match is None:
            renamed[name] = name
        elif int(match.group(1)) in new_index:
            renamed[name] = f"{prefix}.{new_index[int(match.group(1))]}.{name[match.end():]}"
    return renamed


def parse_size(size: str | int) -> int:
    """``"5GB"``, ``"500MB"``, ``"20KB"`` or a number of bytes -> bytes (the units of ``max_shard_size``).

    Raises:
        OutputError: a size that cannot be read, or not positive.
    """
    from huggingface_hub.serialization._base import parse_size_to_int

    try:
        value = parse_size_to_int(size) if isinstance(size, str) else int(size)
    except ValueError as err:
        raise OutputError(f"cannot read the shard size '{size}'", "write it like 5GB or 500MB") from err
    if value <= 0:
        raise OutputError(f"the shard size '{size}' must be positive", "write it like 5GB or 500MB")
    return value


def plan_shards(entries: Sequence[tuple[str, TensorEntry]], max_bytes: int) -> list[list[tuple[str, TensorEntry]]]:
    """Split ``(new name, entry)`` pairs into shards of at most ``max_bytes`` of tensor data, in order.

    A tensor larger than ``max_bytes`` gets a shard of its own (as in ``huggingface_hub``'s
    ``split_state_dict_into_shards_factory``).
    """
    shards: list[list[tuple[str, TensorEntry]]] = [[]]
    size = 0
    for item in entries:
        if shards[-1] and size + item[1].nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item[1].nbytes
    return shards


def _copy_range(src: int, dst: int, offset: int, count: int) -> None:
    """Append ``count`` bytes of ``src`` from ``offset`` to ``dst`` (in the kernel when it can)."""
    while count > 0:
        try:
            done = os.copy_file_range(src, dst, min(count, 1 << 30), offset)
        except (AttributeError, OSError):
            done = 0
        if done <= 0:  # not supported here (other OS, filesystem): plain reads and writes
            data = os.pread(src, min(count, _COPY_CHUNK), offset)
            if not data:
                raise ShortLLMError(f"unexpected end of a weights file while copying {count} bytes",
                                    "check that the download is complete")
            os.write(dst, data)
            done = len(data)
        offset += done
        count -= done


def write_safetensors(path: Path, items: Sequence[tuple[str, TensorEntry]], metadata: dict[str, str]) -> None:
    """Write one safetensors file holding ``items`` (new name, source entry), copying each tensor's bytes.

    Memory: one copy buffer at most (64 MiB), none when the kernel copies between the files itself.
    """
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, entry in items:
        header[name] = {"dtype": entry.dtype, "shape": list(entry.shape),
                        "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the library writes it
    sources: dict[Path, int] = {}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, struct.pack("<Q", len(raw)) + raw)
        for _, entry in items:
            if entry.file not in sources:
                sources[entry.file] = os.open(entry.file, os.O_RDONLY)
            _copy_range(sources[entry.file], fd, entry.start, entry.nbytes)
    finally:
        os.close(fd)
        for src in sources.values():
            os.close(src)


def write_checkpoint(folder: Path, entries: Sequence[tuple[str, TensorEntry]], max_shard_size: str | int,
                     total_parameters: int | None = None) -> dict[str, str]:
    """Write ``(new name, source entry)`` pairs into ``folder`` as Hugging Face safetensors weights.

    One shard: ``model.safetensors``. More: ``model-0000i-of-0000n.safetensors`` and
    ``model.safetensors.index.json`` (``metadata.total_size`` in bytes, ``total_parameters`` when given,
    ``weight_map``), as ``save_pretrained`` writes them. Shards are written one after the other, each tensor
    copied from its source file.

    Returns:
        ``{tensor name: shard file name}``.

    Raises:
        OutputError: a bad ``max_shard_size``.
        ShortLLMError: a duplicated new name.
    """
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise ShortLLMError("two tensors would get the same name in the pruned checkpoint",
                            "please report this with SHORTLLM_DEBUG=1 output")
    shards = plan_shards(entries, parse_size(max_shard_size))
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = WEIGHTS_NAME if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(Path(folder) / file, shard, {"format": "pt"})
        weight_map.update((name, file) for name, _ in shard)
    if len(shards) > 1:
        metadata: dict[str, int] = {"total_size": sum(e.nbytes for _, e in entries)}
        if total_parameters is not None:
            metadata["total_parameters"] = total_parameters
        index = {"metadata": metadata, "weight_map": weight_map}
        (Path(folder) / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return weight_map


def verify_checkpoint(folder: Path, expected: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    """Check the weights written in ``folder`` without loading them: every expected tensor exactly once,
    nothing else, each with its expected dtype and shape. Headers are read with ``safetensors.safe_open``, so
    the library itself accepts every file.

    Args:
        expected: ``{name: (safetensors dtype name, shape)}``.

    Returns:
        The number of tensors checked.

    Raises:
        ShortLLMError: naming the first few problems.
    """
    from safetensors import safe_open

    files = weight_files(folder) or {}
    problems = []
    seen: dict[str, str] = {}
    for path in sorted(Path(folder).glob("*.safetensors")):  # every file, also one the index leaves out
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                if name in seen:
                    problems.append(f"{name} is in both {seen[name]} and {path.name}")
                    continue
                seen[name] = path.name
                if files.get(name) != path:
                    problems.append(f"{name} is in {path.name} but the index does not say so")
                want = expected.get(name)
                piece = f.get_slice(name)
                got = (piece.get_dtype(), tuple(piece.get_shape()))
                if want is None:
                    problems.append(f"{name} should not be there")
                elif got != (want[0], tuple(want[1])):
                    problems.append(f"{name} is {got[0]}{list(got[1])}, expected {want[0]}{list(want[1])}")
    problems += [f"{name} is missing" for name in expected if name not in seen]
    if problems:
        raise ShortLLMError(f"the pruned checkpoint in {folder} is not what was meant to be written: "
                            + "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3
                                                         else ""),
                            "please report this with SHORTLLM_DEBUG=1 output")
    return len(seen)
