"""Token tensors from corpora: calibration windows (scoring) and packed blocks (retraining).

Calibration follows SparseGPT / LLM-Pruner (the sampler behind Shortened LLaMA): pick a random document,
keep it if it has at least ``seq_len`` tokens, take a random window of ``seq_len`` tokens from it.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shortllm.errors import DataError
from shortllm.wording import plural

if TYPE_CHECKING:
    import torch

    from shortllm.data.corpora import Corpus

log = logging.getLogger(__name__)


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (and without the too-long-for-the-model warning)."""
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _special_id(tokenizer: Any, which: str, option: str) -> int:
    token_id = getattr(tokenizer, f"{which}_token_id", None)
    if token_id is None:
        raise DataError(f"the tokenizer has no {which.upper()} token", f"call without {option}")
    return int(token_id)


def check_calibration_sizes(samples: int, seq_len: int) -> None:
    """Refuse calibration sizes no criterion can use (``--samples`` >= 1, ``--seq-len`` >= 2: a window needs a
    next token to predict); pure, so the CLI runs it before anything heavy is imported.

    Raises:
        DataError: naming both values and the paper's.
    """
    if samples <= 0 or seq_len <= 1:
        raise DataError(f"--samples {samples} / --seq-len {seq_len} must be positive (seq-len >= 2)",
                        "the paper uses --samples 10 --seq-len 128")


def _check_sizes(n_samples: int, seq_len: int) -> None:
    if n_samples <= 0 or seq_len <= 0:
        raise DataError(f"calibration needs positive sizes, got n_samples={n_samples}, seq_len={seq_len}",
                        "pass at least 1 sample of at least 1 token")


def calibration_windows(tokenizer: Any, corpus: Corpus, n_samples: int = 10, seq_len: int = 128,
                        seed: int = 1234, add_bos: bool = False) -> torch.LongTensor:
    """Sample ``n_samples`` random token windows of ``seq_len`` tokens from a corpus.

    With ``random.Random(seed)``: pick a random document; skip it if it has fewer than ``seq_len`` tokens
    (``seq_len - 1`` with ``add_bos``, which then puts ``bos_token_id`` first) or was already used; take a
    window at a random offset. Every document is tokenized at most once. A document is reused only once all
    long-enough ones have been used. If no document is long enough, windows come from all documents joined
    with ``"\\n\\n"`` instead (a warning is logged). The result depends only on the corpus, tokenizer, sizes
    and seed.

    Returns:
        A ``torch.long`` tensor of shape ``[n_samples, seq_len]``.

    Raises:
        DataError: non-positive sizes, a tokenizer without BOS when ``add_bos``, or less than ``seq_len``
            tokens in the whole corpus.
    """
    import torch

    _check_sizes(n_samples, seq_len)
    prefix = [_special_id(tokenizer, "bos", "add_bos")] if add_bos else []
    need = seq_len - len(prefix)
    docs = corpus.documents
    rng = random.Random(seed)
    cache: dict[int, list[int]] = {}
    eligible: set[int] = set()
    used: set[int] = set()
    windows: list[list[int]] = []
    while len(windows) < n_samples:
        if len(cache) == len(docs):  # every document seen: we know which are long enough
            if not eligible:
                return torch.tensor(_windows_from_stream(tokenizer, corpus, n_samples, need, prefix, rng),
                                    dtype=torch.long)
            if used >= eligible:
                used.clear()
        i = rng.randrange(len(docs))
        if i not in cache:
            cache[i] = _encode(tokenizer, docs[i]) if docs[i] else []
            if len(cache[i]) >= need:
                eligible.add(i)
        ids = cache[i]
        if len(ids) < need or i in used:
            continue
        used.add(i)
        start = rng.randint(0, len(ids) - need)
        windows.append(prefix + ids[start:start + need])
    log.debug("sampled %d windows of %d tokens from %s (%d documents tokenized)",
              n_samples, seq_len, corpus.name, len(cache))
    return torch.tensor(windows, dtype=torch.long)


def _windows_from_stream(tokenizer: Any, corpus: Corpus, n_samples: int, need: int, prefix: list[int],
                         rng: random.Random) -> list[list[int]]:
    """Windows at random offsets of the whole corpus joined with blank lines (no document is long enough)."""
    ids = _encode(tokenizer, corpus.joined("\n\n"))
    if len(ids) < need:
        raise DataError(
            f"{corpus.name} ({corpus.split}) has only {plural(len(ids), 'token')} in all, "
            f"but one calibration sample needs {need + len(prefix)}",
            "use a larger corpus or a shorter --seq-len",
        )
    log.warning("no document of %s has %d tokens: sampling windows from %s joined",
                corpus.name, need, "its one document" if len(corpus.documents) == 1
                else f"all {len(corpus.documents)} documents")
    windows = []
    for _ in range(n_samples):
        start = rng.randint(0, len(ids) - need)
        windows.append(prefix + ids[start:start + need])
    return windows


@dataclass(frozen=True)
class StreamPosition:
    """Where the next packed block starts: token ``offset`` of document ``doc`` (0-based, counting every
    document of the stream, empty ones included; the tokens of a document include its EOS)."""

    doc: int = 0
    offset: int = 0


def iter_blocks(tokenizer: Any, documents: Iterable[str], seq_len: int, start: StreamPosition = StreamPosition(),
                add_eos: bool = True, batch_size: int = 256) -> Iterator[tuple[list[int], StreamPosition]]:
    """Pack documents into ``seq_len``-token blocks lazily: the streaming form of :func:`pack_documents`.

    Yields each full block with the position right after it, so a consumer can stop and later resume with
    ``start=`` that position and get exactly the blocks that would have followed. Documents before
    ``start.doc`` are skipped without being tokenized. Memory holds one batch of documents at a time.

    Args:
        batch_size: documents tokenized per call (speed only; the blocks do not depend on it).

    Raises:
        DataError: ``seq_len <= 0``, or a tokenizer without EOS when ``add_eos``.
    """
    _check_sizes(1, seq_len)
    suffix = [_special_id(tokenizer, "eos", "add_eos")] if add_eos else []
    pending: deque[list] = deque()  # [doc index, tokens, next unused token]; the first entry is the block start
    block: list[int] = []
    next_doc = start.doc
    docs = itertools.islice(enumerate(documents), start.doc, None)
    while True:
        read = list(itertools.islice(docs, batch_size))
        if not read:
            return
        chunk = [(i, d) for i, d in read if d]
        if not chunk:
            continue
        encoded = tokenizer([d for _, d in chunk], add_special_tokens=False, verbose=False)["input_ids"]
        for (i, _), ids in zip(chunk, encoded):
            skip = start.offset if i == start.doc else 0
            pending.append([i, list(ids) + suffix, skip])
        while pending:
            entry = pending[0]
            take = entry[1][entry[2]:entry[2] + seq_len - len(block)]
            block.extend(take)
            entry[2] += len(take)
            if entry[2] >= len(entry[1]):
                pending.popleft()
                next_doc = entry[0] + 1
            if len(block) == seq_len:
                position = StreamPosition(pending[0][0], pending[0][2]) if pending else StreamPosition(next_doc, 0)
                yield block, position
                block = []


def pack_documents(tokenizer: Any, corpus: Corpus, seq_len: int, add_eos: bool = True,
                   batch_size: int = 1000) -> torch.LongTensor:
    """Tokenize every non-empty document, append EOS after each, concatenate, cut into full blocks.

    This is the training text of continued pretraining: documents keep their order, EOS marks where one
    ends and the next begins, and the last partial block is dropped (:func:`iter_blocks` all at once).

    Args:
        batch_size: documents tokenized per call (memory only; the result does not depend on it).

    Returns:
        A ``torch.long`` tensor of shape ``[n_blocks, seq_len]``.

    Raises:
        DataError: ``seq_len <= 0``, a tokenizer without EOS when ``add_eos``, or under ``seq_len`` tokens.
    """
    import torch

    blocks = [b for b, _ in iter_blocks(tokenizer, corpus.documents, seq_len, add_eos=add_eos,
                                        batch_size=batch_size)]
    if not blocks:
        docs = [d for d in corpus.documents if d]  # under one block in all: cheap to count again
        encoded = tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"] if docs else []
        tokens = sum(len(ids) + add_eos for ids in encoded)
        raise DataError(f"{corpus.name} ({corpus.split}) has only {plural(tokens, 'token')}, "
                        f"less than one block of {seq_len}",
                        "use more text or a shorter sequence length")
    log.debug("packed %s into %d blocks of %d", corpus.name, len(blocks), seq_len)
    return torch.tensor(blocks, dtype=torch.long)
