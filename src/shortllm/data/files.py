"""Local text files -> documents, read lazily so that files larger than memory can be streamed.

One rule per format, so a reader knows what a "document" is without reading code:

* ``.txt`` / ``.raw`` / ``.text``: documents are the chunks between blank lines (a line holding only
  whitespace counts as blank); each chunk is stripped of surrounding whitespace, empty chunks are dropped.
* ``.jsonl``: one JSON object per line, the document is its ``text_field`` (blank lines are skipped).
* ``.json``: a list of objects (or of strings), or one object; a file that is really JSON lines (as the
  C4 ``.json.gz`` shards are) is read as JSON lines. A JSON list is parsed whole (use JSON lines for corpora
  larger than memory).
* ``.parquet``: the column ``text_field``, read one row group batch at a time.
* ``.gz`` after any of the above: decompressed on the fly.
* a directory: every file above in it (not in subfolders), sorted by name, documents concatenated.

:func:`iter_path` yields the documents one by one; :func:`read_path` is the same as a list.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import zlib
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import IO, Any

from shortllm.errors import DataError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".raw", ".text")
JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
SUFFIXES = TEXT_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES
_INLINE_BLANKS = " \t\f\v"  # a line of only these (before its newline) separates .txt documents
_IDENTITY_BYTES = 1 << 16  # bytes of each file hashed into a stream's identity


def _kind(path: Path) -> str | None:
    """The format suffix of ``path`` (``.gz`` looked through), or None for an unsupported file."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes and suffixes[-1] in SUFFIXES else None


def _open(path: Path) -> IO[bytes]:
    try:
        return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}", "check the file and its permissions") from err


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file (``.gz`` decompressed), ``\\r\\n`` turned into ``\\n``.

    Lines keep their ``"\\n"`` (the last one may lack it). Only ``"\\n"`` ends a line.

    Raises:
        DataError: unreadable, truncated or non-UTF-8 file (the byte offset is named).
    """
    offset = 0
    try:
        with _open(path) as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{path} is not UTF-8 text ({err.reason} at byte {offset + err.start})",
                                    "convert the file to UTF-8") from err
                offset += len(raw)
                yield number, line.replace("\r\n", "\n")
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path}: {err}", "check the file and its permissions") from err


def _field_of(row: Any, field: str, where: str) -> str:
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        raise DataError(f"{where} holds a {type(row).__name__}, not a JSON object with a '{field}' field",
                        "give one object per document")
    if field not in row:
        keys = ", ".join(sorted(map(str, row))[:8]) or "none"
        raise DataError(f"{where} has no '{field}' field (fields: {keys})",
                        "pass the right field name (text_field / --text-field)")
    value = row[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{field}' is a {type(value).__name__}, not a string",
                        "point text_field at a field that holds the text")
    return value


def _iter_text(path: Path) -> Iterator[str]:
    chunk: list[str] = []
    for _, line in iter_lines(path):
        body = line[:-1] if line.endswith("\n") else line
        if line.endswith("\n") and not body.strip(_INLINE_BLANKS) and chunk:
            doc = "".join(chunk).strip()
            if doc:
                yield doc
            chunk = []
        else:
            chunk.append(line)
    doc = "".join(chunk).strip()
    if doc:
        yield doc


def _iter_jsonl(path: Path, field: str) -> Iterator[str]:
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number} is not valid JSON ({err.msg})",
                            "write one JSON object per line") from err
        yield _field_of(row, field, f"{path}:{number}")


def _json_layout(path: Path) -> str:
    """``"lines"`` when the first non-blank line of a ``.json`` file is a whole JSON value other than a list
    (C4 shards), ``"empty"`` when there is no such line, else ``"document"`` (one JSON value)."""
    with closing(iter_lines(path)) as lines:
        for _, line in lines:
            if line.strip():
                if line.lstrip().startswith("["):
                    return "document"
                try:
                    json.loads(line)
                    return "lines"
                except json.JSONDecodeError:
                    return "document"
    return "empty"


def _iter_json(path: Path, field: str) -> Iterator[str]:
    layout = _json_layout(path)
    if layout == "empty":
        return
    if layout == "lines":
        yield from _iter_jsonl(path, field)
        return
    text = "".join(line for _, line in iter_lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})",
                        "give a JSON list of objects, or one JSON object per line") from err
    rows = data if isinstance(data, list) else [data]
    for i, row in enumerate(rows):
        yield _field_of(row, field, f"{path} item {i}")


def _iter_parquet(path: Path, field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        columns = handle.schema_arrow.names
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(f"cannot read parquet file {path}: {err}", "check the file") from err
    with closing(handle):
        if field not in columns:
            raise DataError(f"{path} has no column '{field}' (columns: {', '.join(columns[:8])})",
                            "pass the right column name (text_field / --text-field)")
        try:
            for batch in handle.iter_batches(columns=[field], batch_size=1024):
                values = batch.column(0).to_pylist()
                if not all(isinstance(v, str) or v is None for v in values):
                    raise DataError(f"{path}: column '{field}' does not hold strings",
                                    "pass the column with the text")
                yield from ("" if v is None else v for v in values)
        except DataError:
            raise
        except Exception as err:
            raise DataError(f"cannot read parquet file {path}: {err}", "check the file") from err


def iter_file(path: Path, text_field: str = "text") -> Iterator[str]:
    """The documents of one local file, one at a time (rules in this module's docstring).

    Raises:
        DataError: unsupported suffix, unreadable file, bad JSON, a missing field or column.
    """
    kind = _kind(path)
    if kind is None:
        raise DataError(f"{path} has an unsupported file type",
                        f"use one of {', '.join(SUFFIXES)} (optionally .gz), or a directory of them")
    if kind in PARQUET_SUFFIXES:
        yield from _iter_parquet(path, text_field)
    elif kind == ".jsonl":
        yield from _iter_jsonl(path, text_field)
    elif kind == ".json":
        yield from _iter_json(path, text_field)
    else:
        yield from _iter_text(path)


def read_file(path: Path, text_field: str = "text") -> list[str]:
    """:func:`iter_file` as a list."""
    return list(iter_file(path, text_field))


def files_of(path: Path) -> list[Path]:
    """The files a path stands for: itself, or a directory's supported files sorted by name (not recursive).

    Raises:
        DataError: a missing path, or a directory without supported files.
    """
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and _kind(p)), key=lambda p: p.name)
        if not files:
            raise DataError(f"directory {path} holds no text files",
                            f"put {', '.join(SUFFIXES)} files in it (read in name order)")
        return files
    if not path.is_file():
        raise DataError(f"no such file or directory: {path}", "check the path")
    return [path]


def iter_path(path: Path, text_field: str = "text") -> Iterator[str]:
    """The documents of a file or of a directory's files (in name order), one at a time.

    Raises:
        DataError: a missing path, a directory without supported files, or any :func:`iter_file` error.
    """
    for f in files_of(path):
        yield from iter_file(f, text_field)


def read_path(path: Path, text_field: str = "text") -> list[str]:
    """:func:`iter_path` as a list."""
    docs = list(iter_path(path, text_field))
    log.debug("read %d documents from %s", len(docs), path)
    return docs


def files_identity(path: Path) -> str:
    """A cheap identity of the files behind ``path``: names, sizes and the first 64 KiB of each.

    Streaming cannot hash a corpus larger than memory before training; this catches a renamed, resized or
    rewritten file, which is what a resumed run must not silently continue on.
    """
    h = hashlib.sha256()
    for f in files_of(path):
        try:
            h.update(f"{f.name}\0{f.stat().st_size}\0".encode())
            with f.open("rb") as handle:
                h.update(handle.read(_IDENTITY_BYTES))
        except OSError as err:
            raise DataError(f"cannot read {f}: {err}", "check the file and its permissions") from err
    return h.hexdigest()[:16]
