"""Local text files -> lists of documents.

One rule per format, so a reader knows what a "document" is without reading code:

* ``.txt`` / ``.raw`` / ``.text``: documents are the chunks between blank lines (a line holding only
  whitespace counts as blank); each chunk is stripped of surrounding whitespace, empty chunks are dropped.
* ``.jsonl``: one JSON object per line, the document is its ``text_field`` (blank lines are skipped).
* ``.json``: a list of objects (or of strings), or one object; a file that is really JSON lines (as the
  C4 ``.json.gz`` shards are) is read as JSON lines.
* ``.parquet``: the column ``text_field``.
* ``.gz`` after any of the above: decompressed on the fly.
* a directory: every file above in it (not in subfolders), sorted by name, documents concatenated.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path
from typing import Any

from shortllm.errors import DataError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".raw", ".text")
JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
SUFFIXES = TEXT_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES
_BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n")


def _kind(path: Path) -> str | None:
    """The format suffix of ``path`` (``.gz`` looked through), or None for an unsupported file."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes and suffixes[-1] in SUFFIXES else None


def _read_text(path: Path) -> str:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix.lower() == ".gz" else path.read_bytes()
        return raw.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})",
                        "convert the file to UTF-8") from err
    except (OSError, EOFError) as err:
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


def _read_jsonl(text: str, path: Path, field: str) -> list[str]:
    docs = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number} is not valid JSON ({err.msg})",
                            "write one JSON object per line") from err
        docs.append(_field_of(row, field, f"{path}:{number}"))
    return docs


def _read_json(text: str, path: Path, field: str) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _read_jsonl(text, path, field)  # C4-style ".json" shards are JSON lines
    rows = data if isinstance(data, list) else [data]
    return [_field_of(row, field, f"{path} item {i}") for i, row in enumerate(rows)]


def _read_parquet(path: Path, field: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        columns = pq.read_schema(path).names
        if field not in columns:
            raise DataError(f"{path} has no column '{field}' (columns: {', '.join(columns[:8])})",
                            "pass the right column name (text_field / --text-field)")
        values = pq.read_table(path, columns=[field]).column(field).to_pylist()
    except DataError:
        raise
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(f"cannot read parquet file {path}: {err}", "check the file") from err
    if values and not all(isinstance(v, str) or v is None for v in values):
        raise DataError(f"{path}: column '{field}' does not hold strings", "pass the column with the text")
    return ["" if v is None else v for v in values]


def read_file(path: Path, text_field: str = "text") -> list[str]:
    """Read one local file into documents (rules in this module's docstring).

    Raises:
        DataError: unsupported suffix, unreadable file, bad JSON, a missing field or column.
    """
    kind = _kind(path)
    if kind is None:
        raise DataError(f"{path} has an unsupported file type",
                        f"use one of {', '.join(SUFFIXES)} (optionally .gz), or a directory of them")
    if kind in PARQUET_SUFFIXES:
        return _read_parquet(path, text_field)
    text = _read_text(path)
    if kind == ".jsonl":
        return _read_jsonl(text, path, text_field)
    if kind == ".json":
        return _read_json(text, path, text_field)
    return [chunk.strip() for chunk in _BLANK_LINES.split(text) if chunk.strip()]


def read_path(path: Path, text_field: str = "text") -> list[str]:
    """Read a file or a directory of files (sorted by name, not recursive) into documents.

    Raises:
        DataError: a missing path, a directory without supported files, or any :func:`read_file` error.
    """
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and _kind(p)), key=lambda p: p.name)
        if not files:
            raise DataError(f"directory {path} holds no text files",
                            f"put {', '.join(SUFFIXES)} files in it (read in name order)")
        docs: list[str] = []
        for f in files:
            docs.extend(read_file(f, text_field))
        log.debug("read %d documents from %d files in %s", len(docs), len(files), path)
        return docs
    if not path.is_file():
        raise DataError(f"no such file or directory: {path}", "check the path")
    return read_file(path, text_field)
