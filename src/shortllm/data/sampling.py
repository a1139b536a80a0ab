"""Token tensors from corpora: calibration windows (scoring) and packed blocks (retraining).

Calibration follows SparseGPT / LLM-Pruner (the sampler behind Shortened LLaMA): pick a random document,
keep it if it has at least ``seq_len`` tokens, take a random window of ``seq_len`` tokens from it.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from shortllm.errors import DataError

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
            f"{corpus.name} ({corpus.split}) has only {len(ids)} tokens in all, "
            f"but one calibration sample needs {need + len(prefix)}",
            "use a larger corpus or a shorter --seq-len",
        )
    log.warning("no document of %s has %d tokens: sampling windows from all %d documents joined",
                corpus.name, need, len(corpus.documents))
    windows = []
    for _ in range(n_samples):
        start = rng.randint(0, len(ids) - need)
        windows.append(prefix + ids[start:start + need])
    return windows


def pack_documents(tokenizer: Any, corpus: Corpus, seq_len: int, add_eos: bool = True,
                   batch_size: int = 1000) -> torch.LongTensor:
    """Tokenize every non-empty document, append EOS after each, concatenate, cut into full blocks.

    This is the training text of continued pretraining: documents keep their order, EOS marks where one
    ends and the next begins, and the last partial block is dropped.

    Args:
        batch_size: documents tokenized per call (memory only; the result does not depend on it).

    Returns:
        A ``torch.long`` tensor of shape ``[n_blocks, seq_len]``.

    Raises:
        DataError: ``seq_len <= 0``, a tokenizer without EOS when ``add_eos``, or under ``seq_len`` tokens.
    """
    import torch

    _check_sizes(1, seq_len)
    suffix = [_special_id(tokenizer, "eos", "add_eos")] if add_eos else []
    docs = [d for d in corpus.documents if d]
    stream: list[int] = []
    for start in range(0, len(docs), batch_size):
        batch = tokenizer(docs[start:start + batch_size], add_special_tokens=False, verbose=False)
        for ids in batch["input_ids"]:
            stream.extend(ids)
            stream.extend(suffix)
    n_blocks = len(stream) // seq_len
    if n_blocks == 0:
        raise DataError(f"{corpus.name} ({corpus.split}) has only {len(stream)} tokens, "
                        f"less than one block of {seq_len}", "use more text or a shorter sequence length")
    log.debug("packed %d tokens of %s into %d blocks of %d (%d dropped)",
              len(stream), corpus.name, n_blocks, seq_len, len(stream) - n_blocks * seq_len)
    return torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)
