"""Perplexity of a causal LM over a corpus, by two protocols.

``paper`` (Shortened LLaMA / LLM-Pruner ``PPLMetric``): the documents joined with ``"\\n\\n"`` and tokenized once
with the tokenizer's own special tokens (so BOS appears only at the very start, if the tokenizer adds one), cut
into non-overlapping windows of ``seq_len`` tokens; the last partial window is dropped. Each window is scored on
its own: ``seq_len - 1`` predicted tokens. ``bos_every`` is the reference repo's ``ppl_bos`` variant (Shortened
LLaMA's ``process_data(add_bos_to_every=True)``, used for Gemma): the stream is tokenized without special tokens, cut
into windows of ``seq_len`` text tokens, and BOS is put before each one: rows of ``seq_len + 1`` tokens, ``seq_len``
predicted tokens per window (the first text token is predicted from BOS alone).

Where BOS goes otherwise is ``ppl_bos`` (:data:`PPL_BOS`): ``tokenizer`` tokenizes with the tokenizer's own special
tokens (BOS at the very start if the tokenizer adds one: LLM-Pruner's ``PPLMetric``); ``always`` tokenizes without
special tokens and puts the BOS id first whatever the tokenizer does (Shortened LLaMA's released ``process_data``);
``never`` uses no special token at all. The joiner of the paper protocol is ``"\n\n"`` unless a recipe names
another (GPTQ/SLEB C4 joins documents with a space: ``c4-gptq`` in :mod:`shortllm.evaluation.run`).

``sliding`` (the Hugging Face strided recipe): the corpus joined with its own separator, windows of ``seq_len``
tokens starting every ``stride`` tokens; each token is scored once, in the first window that reaches it, with up
to ``seq_len - 1`` tokens of context. With ``stride < seq_len`` that is every token after the first; with
``stride == seq_len`` the first token of each window has no context and is not scored, as in the recipe.

Both report ``exp(mean NLL)`` over all predicted tokens. The maths (window plans, summed NLL) is separate from
the plumbing (text -> ids) so that it can be checked against a straightforward loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from shortllm.errors import DataError
from shortllm.wording import plural

if TYPE_CHECKING:
    import torch

    from shortllm.data.corpora import Corpus

PROTOCOLS = ("paper", "sliding")
PPL_BOS = ("tokenizer", "always", "never")
DEFAULT_SEQ_LEN = {"paper": 128, "sliding": 2048}
TOKENS_PER_FORWARD = 2048  # default rows per forward = this // seq_len: bounds the logits' memory


@dataclass(frozen=True)
class Window:
    """One forward pass: tokens ``[start, end)`` of the stream, scoring predictions of positions ``>= target``.

    ``bos`` puts the BOS token before the window (``bos_every``); it is never scored as a target.
    """

    start: int
    end: int
    target: int
    bos: bool = False


@dataclass
class PplResult:
    """The perplexity of one model on one corpus, and how it was measured."""

    dataset: str
    split: str
    protocol: str
    seq_len: int
    stride: int | None
    bos_every: bool
    ppl_bos: str  # where BOS goes besides bos_every: tokenizer | always | never
    windows: int
    tokens_in_text: int  # length of the token stream
    tokens_scored: int  # predicted tokens (the NLL's denominator)
    nll: float  # mean negative log-likelihood per scored token, nats
    ppl: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paper_windows(n_tokens: int, seq_len: int, bos_every: bool = False, limit: int | None = None) -> list[Window]:
    """Non-overlapping windows of ``seq_len`` stream tokens; the last partial window is dropped; first ``limit`` kept.

    Without ``bos_every`` a window scores ``seq_len - 1`` tokens (its first token is context only). With
    ``bos_every`` (Shortened LLaMA's ``add_bos_to_every``) a BOS goes before each window, so a row is
    ``seq_len + 1`` tokens and all ``seq_len`` stream tokens are scored (the first from BOS alone).
    """
    size = seq_len
    count = n_tokens // size if size > 0 else 0
    if limit is not None:
        count = min(count, limit)
    if bos_every:
        return [Window(i * size, (i + 1) * size, i * size, bos=True) for i in range(count)]
    return [Window(i * size, (i + 1) * size, i * size + 1) for i in range(count)]


def sliding_windows(n_tokens: int, seq_len: int, stride: int, limit: int | None = None) -> list[Window]:
    """Strided windows: start every ``stride`` tokens; each token is scored at most once (every token after the
    first when ``stride < seq_len``).

    The last window may be shorter than ``seq_len`` (it ends with the stream). ``limit`` keeps the first N.
    """
    windows: list[Window] = []
    prev_end = 0
    for start in range(0, max(n_tokens - 1, 1), stride):
        end = min(start + seq_len, n_tokens)
        windows.append(Window(start, end, max(prev_end, start + 1)))
        prev_end = end
        if end == n_tokens or (limit is not None and len(windows) >= limit):
            break
    return windows


def check_protocol(protocol: str, seq_len: int, stride: int | None, bos_every: bool,
                   ppl_bos: str = "tokenizer") -> None:
    """Validate protocol options before any slow work.

    Raises:
        DataError: unknown protocol or ``ppl_bos``, non-positive sizes, a stride larger than the window,
            bos_every with sliding.
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown perplexity protocol '{protocol}'", f"use one of {', '.join(PROTOCOLS)}")
    if ppl_bos not in PPL_BOS:
        raise DataError(f"unknown --ppl-bos '{ppl_bos}'", f"use one of {', '.join(PPL_BOS)}")
    shortest = 2
    if seq_len < shortest:  # the hint names what is needed, not the paper's 128 (beyond some models' context)
        raise DataError(f"--seq-len {seq_len} is too short to score a token",
                        f"use --seq-len {shortest} or more")
    if protocol == "sliding":
        if bos_every:
            raise DataError("--bos-every only applies to --ppl-protocol paper", "drop --bos-every")
        if stride is None or not 0 < stride <= seq_len:
            raise DataError(f"--stride {stride} must be between 1 and --seq-len {seq_len}",
                            "e.g. --seq-len 2048 --stride 512")


def token_stream(tokenizer: Any, corpus: Corpus, protocol: str, bos_every: bool = False,
                 ppl_bos: str = "tokenizer", joiner: str | None = None) -> list[int]:
    """The token ids a protocol scores (see the module docstring for the text and special tokens of each).

    Args:
        ppl_bos: ``tokenizer`` (its own special tokens), ``always`` (BOS id first, no other special token),
            ``never`` (no special token); ignored with ``bos_every`` (BOS goes before each window instead).
        joiner: what goes between documents (default: ``"\n\n"`` for paper, the corpus' separator for sliding).

    Raises:
        DataError: ``always`` with a tokenizer that has no BOS token.
    """
    if joiner is None:
        joiner = "\n\n" if protocol == "paper" else corpus.separator
    text = corpus.joined(joiner)
    if bos_every or ppl_bos != "tokenizer":
        ids = list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        if ppl_bos == "always" and not bos_every:
            bos = getattr(tokenizer, "bos_token_id", None)
            if bos is None:
                raise DataError("the tokenizer has no BOS token for --ppl-bos always", "use --ppl-bos tokenizer")
            ids = [int(bos)] + ids
        return ids
    return list(tokenizer(text, verbose=False)["input_ids"])


def plan_windows(n_tokens: int, protocol: str, seq_len: int, stride: int | None, bos_every: bool,
                 limit: int | None, what: str) -> list[Window]:
    """The windows of ``protocol`` over a stream of ``n_tokens``.

    Raises:
        DataError: the text is shorter than one window (paper) or than two tokens.
    """
    if protocol == "paper":
        windows = paper_windows(n_tokens, seq_len, bos_every, limit)
        if not windows:
            raise DataError(f"{what} has only {plural(n_tokens, 'token')}, less than one window of {seq_len}",
                            "use more text or a smaller --seq-len")
        return windows
    if n_tokens < 2:
        raise DataError(f"{what} has only {plural(n_tokens, 'token')}: nothing to predict", "use more text")
    return sliding_windows(n_tokens, seq_len, stride or seq_len, limit)


def _batch_nll(model: Any, rows: torch.Tensor, first_target: list[int]) -> tuple[float, int]:
    """Summed NLL (float64) and count of the tokens at positions ``>= first_target[r]`` of each row."""
    import torch

    logits = model(input_ids=rows, use_cache=False).logits[:, :-1].float()
    labels = rows[:, 1:]
    # rows of [B*(T-1), V]: contiguous, about twice as fast as cross_entropy over a transposed [B, V, T-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                            reduction="none").view(labels.shape)
    positions = torch.arange(1, rows.shape[1], device=rows.device)
    mask = positions.unsqueeze(0) >= torch.tensor(first_target, device=rows.device).unsqueeze(1)
    return float(nll[mask].double().sum()), int(mask.sum())


def score_windows(model: Any, ids: list[int], windows: list[Window], bos_id: int | None = None,
                  batch_size: int | None = None, progress=lambda done, total: None) -> tuple[float, int]:
    """Summed NLL and number of scored tokens over ``windows`` of ``ids``, batching windows of equal length.

    Returns:
        (sum of NLL in nats, tokens scored).
    """
    import torch

    device = next(model.parameters()).device
    stream = torch.tensor(ids, dtype=torch.long)
    bos = torch.tensor([bos_id if bos_id is not None else 0], dtype=torch.long)
    total_nll, total_tokens, done = 0.0, 0, 0
    groups: dict[int, list[Window]] = {}
    for w in windows:
        groups.setdefault(w.end - w.start + w.bos, []).append(w)
    with torch.no_grad():
        for length, group in groups.items():
            rows_per_batch = batch_size or max(1, TOKENS_PER_FORWARD // length)
            for i in range(0, len(group), rows_per_batch):
                chunk = group[i:i + rows_per_batch]
                rows = torch.stack([torch.cat([bos, stream[w.start:w.end]]) if w.bos else stream[w.start:w.end]
                                    for w in chunk]).to(device)
                # row position p holds stream token start + p - bos; score positions whose token index >= target
                first = [w.target - w.start + w.bos for w in chunk]
                nll, count = _batch_nll(model, rows, first)
                total_nll += nll
                total_tokens += count
                done += len(chunk)
                progress(done, len(windows))
    return total_nll, total_tokens


def perplexity(model: Any, tokenizer: Any, corpus: Corpus, protocol: str = "paper", seq_len: int | None = None,
               stride: int | None = 512, bos_every: bool = False, limit: int | None = None,
               batch_size: int | None = None, progress=lambda done, total: None, ppl_bos: str = "tokenizer",
               joiner: str | None = None) -> PplResult:
    """Perplexity of ``model`` on ``corpus`` by ``protocol`` (see the module docstring).

    Args:
        seq_len: window length (default: 128 for paper, 2048 for sliding).
        stride: step between sliding windows (sliding only).
        bos_every: BOS before every window of ``seq_len`` text tokens (paper only; needs a BOS token).
        limit: score only the first N windows.
        ppl_bos: where BOS goes otherwise (:data:`PPL_BOS`; see :func:`token_stream`).
        joiner: what joins the documents (default: see :func:`token_stream`).
        batch_size: windows per forward (default: as many as fit in 2048 tokens, at least 1).

    Returns:
        A :class:`PplResult`.

    Raises:
        DataError: bad options, a tokenizer without BOS for ``bos_every``, too little text.
    """
    seq_len = seq_len or DEFAULT_SEQ_LEN.get(protocol, 128)
    check_protocol(protocol, seq_len, stride, bos_every, ppl_bos)
    if tokenizer is None:
        raise DataError("the model has no tokenizer, so its perplexity on text cannot be measured",
                        "save a tokenizer with the model")
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_every and bos_id is None:
        raise DataError("the tokenizer has no BOS token", "drop --bos-every")
    ids = token_stream(tokenizer, corpus, protocol, bos_every, ppl_bos, joiner)
    windows = plan_windows(len(ids), protocol, seq_len, stride, bos_every, limit, f"{corpus.name} ({corpus.split})")
    nll, count = score_windows(model, ids, windows, bos_id, batch_size, progress)
    mean = nll / count
    return PplResult(dataset=corpus.name, split=corpus.split, protocol=protocol, seq_len=seq_len,
                     stride=stride if protocol == "sliding" else None, bos_every=bos_every,
                     ppl_bos="every window" if bos_every else ppl_bos, windows=len(windows),
                     tokens_in_text=len(ids), tokens_scored=count, nll=mean, ppl=math.exp(mean))
