"""Named datasets: the papers' Hugging Face configs, and their local copies in a data directory.

With a data directory (``--data-dir`` / ``$SHORTLLM_DATA_DIR``) a named dataset is read from the file the
layout table names, never from the network; without one it goes through ``datasets.load_dataset``.
Local and hub copies give the same rows: WikiText-2 rows are the file's lines with blank lines as ``""``
and every other line keeping its ``"\\n"``; PTB rows are the file's lines stripped (the HF
``ptb_text_only`` builder does ``line.strip()``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shortllm.data.files import iter_lines, iter_path
from shortllm.data.offline import hub_access, is_network_error
from shortllm.errors import DataError, reason

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation"}


@dataclass(frozen=True)
class NamedDataset:
    """How to find one named dataset on the hub and in a data directory."""

    name: str
    hub_path: str
    hub_config: str | None
    field: str
    default_split: str  # used when neither the spec nor the caller names a split
    local: dict[str, tuple[str, ...]]  # split -> candidate paths under the data dir (first found wins)
    reader: str = "file"  # "wikitext" | "ptb" | "file" (read by suffix, field "text")
    data_files: dict[str, str] = field(default_factory=dict)  # split -> hub file (C4 reads one shard)
    stream_limit: int | None = None  # stream only the first N rows of huge corpora
    separator: str = "\n\n"  # how the evaluation recipe joins rows

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.local)

    @property
    def hub_name(self) -> str:
        return f"hf:{self.hub_path}" + (f"/{self.hub_config}" if self.hub_config else "")


def _three(folder: str, pattern: str) -> dict[str, tuple[str, ...]]:
    return {s: (f"{folder}/{pattern.format(f)}",) for s, f in
            (("train", "train"), ("validation", "valid"), ("test", "test"))}


DATASETS: dict[str, NamedDataset] = {
    d.name: d
    for d in (
        NamedDataset("wikitext2", "wikitext", "wikitext-2-raw-v1", "text", "test",
                     _three("wikitext-2-raw", "wiki.{}.raw"), reader="wikitext"),
        NamedDataset("ptb", "ptb_text_only", "penn_treebank", "sentence", "test",
                     _three("ptb", "ptb.{}.txt"), reader="ptb", separator=" "),
        NamedDataset("c4", "allenai/c4", None, "text", "validation",
                     {"train": ("pretrain/c4_en_train_first1000.jsonl", "pretrain/c4_en_train.jsonl"),
                      "validation": ("pretrain/c4_en_validation.jsonl",)},
                     data_files={"train": "en/c4-train.00000-of-01024.json.gz",
                                 "validation": "en/c4-validation.00000-of-00008.json.gz"}),
        NamedDataset("bookcorpus", "bookcorpus/bookcorpus", None, "text", "train",
                     {"train": ("pretrain/bookcorpus_train.jsonl",)}, stream_limit=100_000),
        NamedDataset("slimpajama", "DKYoon/SlimPajama-6B", None, "text", "test",
                     {s: (f"pretrain/slimpajama_{s}.jsonl",) for s in ("train", "validation", "test")},
                     stream_limit=20_000),
    )
}


def resolve_split(ds: NamedDataset, split: str | None) -> str:
    """Normalise a split name (``valid``/``dev`` -> ``validation``); None gives the dataset's default.

    Raises:
        DataError: a split the dataset does not have.
    """
    if split is None:
        return ds.default_split
    name = SPLIT_ALIASES.get(split.lower(), split.lower())
    if name not in ds.local:
        raise DataError(f"{ds.name} has no split '{split}'", f"use one of {', '.join(ds.splits)}")
    return name


def _text_lines(path: Path) -> Iterator[str]:
    """The lines of ``Path.read_text().splitlines(keepends=True)`` (universal newlines, then every Unicode line
    break), read lazily."""
    for _, line in iter_lines(path):
        yield from line.replace("\r", "\n").splitlines(keepends=True)


def _wikitext_rows(path: Path) -> Iterator[str]:
    for line in _text_lines(path):
        yield "" if not line.strip() else line


def _ptb_rows(path: Path) -> Iterator[str]:
    for line in _text_lines(path):
        yield line.strip()


def local_file(ds: NamedDataset, split: str, root: Path) -> Path:
    """The file of a named dataset's split in the data directory ``root``.

    Raises:
        DataError: naming the file expected when it is absent.
    """
    candidates = [root / rel for rel in ds.local[split]]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        others = [s for s in ds.splits if s != split and any((root / r).is_file() for r in ds.local[s])]
        expected = " or ".join(str(p) for p in candidates)
        raise DataError(
            f"data directory {root} has no {ds.name} {split} split: expected {expected}",
            "add that file (layout in docs/data.md)"
            + (f", or use split {', '.join(others)}" if others else "")
            + ", or drop --data-dir / SHORTLLM_DATA_DIR to download from the hub",
        )
    return path


def iter_local(ds: NamedDataset, path: Path) -> Iterator[str]:
    """The rows of a named dataset's local file, one at a time (the dataset's own reader)."""
    if ds.reader == "wikitext":
        return _wikitext_rows(path)
    if ds.reader == "ptb":
        return _ptb_rows(path)
    return iter_path(path, ds.field)


def _hub_error(ds: NamedDataset, split: str, err: Exception, reachable: bool = True) -> DataError:
    """The one-line error of a failed hub load; a network failure (or no network at all) names the offline fixes."""
    if isinstance(err, KeyError):
        return DataError(f"{ds.hub_name} {split} has no '{ds.field}' field",
                         "pass --text-field (text_field) with the column that holds the text")
    named = any(ds.local.values())  # a named dataset with a place in the data directory layout
    if not reachable or is_network_error(err):
        if named:
            hint = ("pass --data-dir (or set SHORTLLM_DATA_DIR) with a local copy (layout in docs/data.md), "
                    "or run once online so that the datasets cache holds it")
        else:  # any hub dataset: no place in the layout, but a folder of its files is a local corpus
            hint = ("download the dataset's files and pass their folder instead of the hf: spec (a relative folder "
                    "is also looked up in --data-dir), or run once online so that the datasets cache holds it")
        return DataError(f"cannot load {ds.name} ({ds.hub_name}, {split}): the Hugging Face hub cannot be reached "
                         "(offline) and the datasets cache holds no copy", hint)
    if named:
        hint = "pass --data-dir (or set SHORTLLM_DATA_DIR) with a local copy (layout in docs/data.md), or pass a file"
    else:
        hint = "check the name, or download the dataset's files and pass the folder"
    first = reason(err)
    return DataError(f"cannot load {ds.name} ({ds.hub_name}, {split}) from the Hugging Face hub: {first[:200]}", hint)


def _hub_dataset(ds: NamedDataset, split: str, streaming: bool, reachable: bool) -> Any:
    """``datasets.load_dataset`` of a named dataset; call it inside :func:`hub_access` (``reachable`` its answer)."""
    try:
        import datasets
    except ImportError as err:
        raise DataError(f"cannot load {ds.name}: the 'datasets' package is not installed",
                        "pip install datasets, or pass --data-dir with a local copy") from err
    kwargs = {"data_files": {split: ds.data_files[split]}} if split in ds.data_files else {}
    log.info("loading %s %s from the Hugging Face hub (%s)", ds.name, split, ds.hub_name)
    try:
        return datasets.load_dataset(ds.hub_path, ds.hub_config, split=split, streaming=streaming, **kwargs)
    except Exception as err:  # datasets raises ConnectionError, FileNotFoundError, DatasetNotFoundError, ...
        raise _hub_error(ds, split, err, reachable) from err


def iter_hub(ds: NamedDataset, split: str) -> Iterator[str]:
    """Stream every row of a named dataset from the hub (``datasets`` streaming mode, no row limit).

    Raises:
        DataError: the dataset cannot be fetched (offline: naming the fixes) or lacks its text field (when
            iteration reaches it).
    """
    with hub_access() as reachable:  # streaming reads the network while iterating: offline mode spans it
        data = _hub_dataset(ds, split, True, reachable)
        try:
            for row in data:
                yield row[ds.field]
        except Exception as err:
            raise _hub_error(ds, split, err, reachable) from err


def load_hub(ds: NamedDataset, split: str) -> tuple[list[str], str]:
    """Load a named dataset with ``datasets.load_dataset``; returns (rows, ``hf:path/config``).

    Large corpora (``stream_limit``) are streamed and only their first rows kept.

    Raises:
        DataError: the dataset cannot be fetched (offline: naming the fixes; unknown, gated) or lacks its text field.
    """
    with hub_access() as reachable:
        data = _hub_dataset(ds, split, ds.stream_limit is not None, reachable)
        try:
            if ds.stream_limit is not None:
                rows = [row[ds.field] for row in itertools.islice(data, ds.stream_limit)]
            else:
                if ds.field not in (getattr(data, "column_names", None) or [ds.field]):
                    raise KeyError(ds.field)
                rows = list(data[ds.field])
        except Exception as err:
            raise _hub_error(ds, split, err, reachable) from err
    return rows, ds.hub_name
