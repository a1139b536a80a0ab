"""Text corpora: one spec string -> a :class:`Corpus` of documents.

A spec is a built-in or named dataset, optionally with a split after a colon (``pydoc``, ``ptb:test``,
``wikitext2:validation``), or a local file or directory (formats in :mod:`shortllm.data.files`).

The split is chosen as: the split in the spec, else the ``split`` argument (callers pass their own
default, e.g. ``"train"`` for calibration), else the dataset's default (its evaluation split; see
``docs/data.md``). Local files have no splits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shortllm.data.files import SUFFIXES, files_identity, files_of, iter_path
from shortllm.data.named import (
    DATASETS,
    SPLIT_ALIASES,
    NamedDataset,
    iter_hub,
    iter_local,
    load_hub,
    local_file,
    resolve_split,
)
from shortllm.errors import DataError
from shortllm.wording import plural

log = logging.getLogger(__name__)

KNOWN_DATASETS: tuple[str, ...] = ("pydoc", "wikitext2", "ptb", "c4", "bookcorpus", "slimpajama")
DATA_DIR_ENV = "SHORTLLM_DATA_DIR"
ALIASES = {"wikitext": "wikitext2", "wikitext-2": "wikitext2", "wikitext-2-raw-v1": "wikitext2",
           "ptb_text_only": "ptb", "penn_treebank": "ptb", "slimpajama-6b": "slimpajama"}
PYDOC_TEST_EVERY = 5  # every 5th topic (sorted index 4, 9, 14, ...) is held out for test
PYDOC_DEFAULT_SPLIT = "test"  # like every named dataset, the default is the evaluation split


@dataclass
class Corpus:
    """Documents with their provenance.

    ``source`` says where they came from: ``"builtin"``, a file path, or ``"hf:wikitext/wikitext-2-raw-v1"``.
    ``separator`` is how the dataset's perplexity recipe joins rows (``" "`` for PTB, ``"\\n\\n"`` otherwise):
    ``corpus.joined(corpus.separator)``.
    """

    documents: list[str]
    name: str
    split: str
    source: str
    separator: str = "\n\n"

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def num_chars(self) -> int:
        """Total characters over all documents."""
        return sum(len(d) for d in self.documents)

    def fingerprint(self) -> str:
        """A stable identity of the documents (order included): the first 16 hex digits of a sha256."""
        h = hashlib.sha256()
        for doc in self.documents:
            data = doc.encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))  # length prefix: ["ab"] != ["a", "b"]
            h.update(data)
        return h.hexdigest()[:16]

    def joined(self, sep: str = "\n\n") -> str:
        """All documents as one string, ``sep`` between them."""
        return sep.join(self.documents)


def data_dir(explicit: str | Path | None = None) -> Path | None:
    """The local data directory: ``explicit`` (``--data-dir``), else ``$SHORTLLM_DATA_DIR``, else None.

    Raises:
        DataError: the directory given does not exist.
    """
    value = explicit if explicit not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        origin = "--data-dir" if explicit not in (None, "") else f"${DATA_DIR_ENV}"
        raise DataError(f"data directory {path} (from {origin}) does not exist",
                        "create it (layout in docs/data.md) or point it at an existing folder")
    return path


_find_data_dir = data_dir  # load_documents' ``data_dir`` argument shadows the function's name


def pydoc_topics(split: str) -> list[str]:
    """Python's own help topics (``pydoc_data.topics``) as documents, one per topic.

    Topics are sorted by key; every ``PYDOC_TEST_EVERY``-th (sorted index 4, 9, ...) is ``test`` (also
    reachable as ``validation``), the rest ``train``; ``all`` gives every topic. The splits never overlap.

    Raises:
        DataError: any other split name.
    """
    from pydoc_data.topics import topics

    split = _pydoc_split(split)
    keys = sorted(topics)
    held_out = {k for i, k in enumerate(keys) if i % PYDOC_TEST_EVERY == PYDOC_TEST_EVERY - 1}
    if split == "all":
        chosen = keys
    elif split == "test":
        chosen = [k for k in keys if k in held_out]
    else:
        chosen = [k for k in keys if k not in held_out]
    return [topics[k] for k in chosen]


def _pydoc_split(split: str | None) -> str:
    split = split or PYDOC_DEFAULT_SPLIT
    name = SPLIT_ALIASES.get(split.lower(), split.lower())
    name = "test" if name == "validation" else name
    if name not in ("train", "test", "all"):
        raise DataError(f"pydoc has no split '{split}'", "use one of train, test (= validation), all")
    return name


def _split_spec(spec: str) -> tuple[str, str | None]:
    """``"ptb:test"`` -> ``("ptb", "test")``; a spec without a known name before the colon is kept whole."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail and ALIASES.get(head.lower(), head.lower()) in KNOWN_DATASETS:
        return head, tail
    return spec, None


def _check_text(corpus: Corpus) -> Corpus:
    if not corpus.documents or not any(d.strip() for d in corpus.documents):
        raise DataError(
            f"no text in {corpus.source} ({plural(len(corpus.documents), 'document')}, "
            f"{plural(corpus.num_chars, 'character')})",
            "give a file with text in it (rules in docs/data.md)",
        )
    return corpus


@dataclass(frozen=True)
class _Target:
    """Where a spec's documents are: the built-in corpus, a named dataset (local file or hub), or a path."""

    kind: str  # "pydoc" | "local" (named dataset in the data dir) | "hub" | "path"
    name: str
    split: str
    separator: str = "\n\n"
    path: Path | None = None
    dataset: NamedDataset | None = None

    @property
    def source(self) -> str:
        if self.kind == "pydoc":
            return "builtin"
        if self.kind == "hub":
            assert self.dataset is not None
            return self.dataset.hub_name
        return str(self.path)


HUB_PREFIX = "hf:"


def hub_dataset(spec: str, split: str | None, text_field: str) -> NamedDataset:
    """The dataset of a ``hf:OWNER/NAME[/CONFIG][:SPLIT]`` spec (any Hugging Face dataset; split default train).

    Raises:
        DataError: a malformed spec.
    """
    body = spec[len(HUB_PREFIX):]
    path, sep, spec_split = body.partition(":")
    parts = path.split("/")
    if not path or sep and not spec_split or len(parts) > 3 or not all(parts):
        raise DataError(f"cannot read the hub dataset spec '{spec}'",
                        "write hf:OWNER/NAME, hf:OWNER/NAME/CONFIG, optionally with :SPLIT "
                        "(e.g. hf:HuggingFaceFW/fineweb-edu/sample-10BT:train)")
    hub_path = "/".join(parts[:2])
    config = parts[2] if len(parts) == 3 else None
    wanted = spec_split or split or "train"
    chosen = SPLIT_ALIASES.get(wanted.lower(), wanted)
    return NamedDataset(hub_path, hub_path, config, text_field, chosen, {chosen: ()})


def _resolve(spec: str, split: str | None, data_dir: str | Path | None, text_field: str = "text") -> _Target:
    """Find what a spec names, without reading any documents."""
    spec = str(spec).strip()
    if spec.lower().startswith(HUB_PREFIX):
        ds = hub_dataset(spec, split, text_field)
        return _Target("hub", ds.name, ds.default_split, ds.separator, None, ds)
    name, spec_split = _split_spec(spec)
    split = spec_split or split
    key = ALIASES.get(name.lower(), name.lower())
    root = _find_data_dir(data_dir)
    if text_field != "text" and (key == "pydoc" or key in DATASETS):
        raise DataError(f"--text-field {text_field} does not apply to '{name}', a named dataset whose text "
                        "shortllm reads itself", "leave out --text-field, or give a .jsonl/.json/.parquet file or "
                        "an hf: dataset")
    if key == "pydoc":
        return _Target("pydoc", "pydoc", _pydoc_split(split))
    if key in DATASETS:
        ds = DATASETS[key]
        chosen = resolve_split(ds, split)
        if root is not None:
            return _Target("local", ds.name, chosen, ds.separator, local_file(ds, chosen, root), ds)
        return _Target("hub", ds.name, chosen, ds.separator, None, ds)
    path = Path(name).expanduser()
    if not path.exists() and root is not None and not path.is_absolute() and (root / path).exists():
        path = root / path
    if not path.exists():
        looks_like_path = "/" in name or "\\" in name or path.suffix.lower() in SUFFIXES + (".gz",)
        if looks_like_path:
            raise DataError(f"no such file or directory: {name}", "check the path")
        raise DataError(f"unknown dataset '{name}' (known: {', '.join(KNOWN_DATASETS)})",
                        "use a known name, or a path to a text file or directory")
    if split not in (None, "all", "train"):
        log.debug("split %r ignored for local path %s", split, path)
    files_of(path)  # a directory without text files fails here, before anyone streams it
    return _Target("path", path.name, "all", path=path)


def check_data(spec: str, split: str | None = None, data_dir: str | Path | None = None,
               text_field: str = "text") -> None:
    """Refuse a data spec that names nothing (an unknown dataset, a missing file, a ``--text-field`` that does
    not apply), reading no documents and importing no dataset library: for the checks before anything heavy.

    Raises:
        DataError: as :func:`load_documents` would for the same spec.
    """
    _resolve(spec, split, data_dir, text_field)


def load_documents(spec: str, split: str | None = None, *, data_dir: str | Path | None = None,
                   text_field: str = "text") -> Corpus:
    """Load a corpus from a spec.

    Args:
        spec: a name from :data:`KNOWN_DATASETS` with an optional ``:split``, or a path to a
            ``.txt``/``.raw``/``.jsonl``/``.json``/``.parquet`` file (optionally ``.gz``) or a folder of them.
            A relative path that does not exist is also looked up in the data directory.
        split: the split to use when the spec names none; None means the dataset's default.
        data_dir: local copies of named datasets (else ``$SHORTLLM_DATA_DIR``); when set, named datasets are
            read from it and never from the network.
        text_field: the JSON field or parquet column holding the text of local files.

    Returns:
        A :class:`Corpus` with at least some non-blank text.

    Raises:
        DataError: an unknown name or missing file, a missing split or field, no text, or a failed download.
    """
    target = _resolve(spec, split, data_dir, text_field)
    if target.kind == "hub":  # loaded through datasets (row limit for the huge corpora), not streamed
        assert target.dataset is not None
        docs, _ = load_hub(target.dataset, target.split)
    else:  # the same readers as streaming, read to the end
        docs = list(DocumentStream(target.name, target.split, target.source, target, text_field))
        log.info("read %s of %s %s from %s", plural(len(docs), "document"), target.name, target.split,
                 target.source)
    return _check_text(Corpus(docs, target.name, target.split, target.source, target.separator))


@dataclass
class DocumentStream:
    """The documents of a spec, read lazily each time it is iterated: for corpora larger than memory.

    Iterating gives the same documents, in the same order, as ``load_documents(...).documents``, except for a
    named dataset without a data directory: the hub dataset is streamed whole, without the row limit that
    ``load_documents`` applies to ``bookcorpus`` and ``slimpajama``.
    ``identity`` is cheap to compute (see :meth:`fingerprint`), unlike :meth:`Corpus.fingerprint`.
    """

    name: str
    split: str
    source: str
    target: _Target
    text_field: str = "text"

    def __iter__(self) -> Iterator[str]:
        t = self.target
        if t.kind == "pydoc":
            return iter(pydoc_topics(t.split))
        if t.kind == "local":
            assert t.dataset is not None and t.path is not None
            return iter_local(t.dataset, t.path)
        if t.kind == "hub":
            assert t.dataset is not None
            return iter_hub(t.dataset, t.split)
        assert t.path is not None
        return iter_path(t.path, self.text_field)

    def fingerprint(self) -> str:
        """A stable identity without reading the corpus: the built-in text's hash, the hub name, split and
        files, or the local files' names, sizes and first 64 KiB (:func:`shortllm.data.files.files_identity`)."""
        t = self.target
        if t.kind == "pydoc":
            return Corpus(pydoc_topics(t.split), "pydoc", t.split, "builtin").fingerprint()
        if t.kind == "hub":
            assert t.dataset is not None
            blob = json.dumps([t.dataset.hub_name, t.split, t.dataset.data_files.get(t.split)])
            return hashlib.sha256(blob.encode()).hexdigest()[:16]
        assert t.path is not None
        return files_identity(t.path)


def stream_documents(spec: str, split: str | None = None, *, data_dir: str | Path | None = None,
                     text_field: str = "text") -> DocumentStream:
    """A :class:`DocumentStream` of a spec (the same specs and split rules as :func:`load_documents`).

    Nothing is read until it is iterated; iterating it again starts from the first document.

    Raises:
        DataError: an unknown name, a missing file or split (now); unreadable data (while iterating).
    """
    target = _resolve(spec, split, data_dir, text_field)
    return DocumentStream(target.name, target.split, target.source, target, text_field)
