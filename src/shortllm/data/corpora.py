"""Text corpora: one spec string -> a :class:`Corpus` of documents.

A spec is a built-in or named dataset, optionally with a split after a colon (``pydoc``, ``ptb:test``,
``wikitext2:validation``), or a local file or directory (formats in :mod:`shortllm.data.files`).

The split is chosen as: the split in the spec, else the ``split`` argument (callers pass their own
default, e.g. ``"train"`` for calibration), else the dataset's default (its evaluation split; see
``docs/data.md``). Local files have no splits.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from shortllm.data.files import SUFFIXES, read_path
from shortllm.data.named import DATASETS, SPLIT_ALIASES, load_hub, load_local, resolve_split
from shortllm.errors import DataError

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
            f"no text in {corpus.source} ({len(corpus.documents)} documents, {corpus.num_chars} characters)",
            "give a file with text in it (rules in docs/data.md)",
        )
    return corpus


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
    name, spec_split = _split_spec(str(spec).strip())
    split = spec_split or split
    key = ALIASES.get(name.lower(), name.lower())
    root = _find_data_dir(data_dir)
    if key == "pydoc":
        chosen = _pydoc_split(split)
        return _check_text(Corpus(pydoc_topics(chosen), "pydoc", chosen, "builtin"))
    if key in DATASETS:
        ds = DATASETS[key]
        chosen = resolve_split(ds, split)
        rows, source = load_local(ds, chosen, root) if root else load_hub(ds, chosen)
        return _check_text(Corpus(rows, ds.name, chosen, source, ds.separator))
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
    docs = read_path(path, text_field)
    log.info("read %d documents from %s", len(docs), path)
    return _check_text(Corpus(docs, path.name, "all", str(path)))
