"""Each perplexity protocol equals an independent, straightforward loop (to 1e-5) on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from shortllm.data import Corpus
from shortllm.errors import DataError
from shortllm.evaluation.perplexity import paper_windows, perplexity, sliding_windows
from tests.evaluation.helpers import PTB_LINES, WIKI_LINES


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    rows = ["" if not line.strip() else line for line in WIKI_LINES]
    return Corpus(rows, "wikitext2", "test", "test")


def _loss(model, ids: list[int]) -> tuple[float, int]:
    """Summed NLL of a window the plain transformers way (labels=input_ids), and the tokens it predicts."""
    x = torch.tensor([ids])
    with torch.no_grad():
        mean = model(input_ids=x, labels=x, use_cache=False).loss.item()
    return mean * (len(ids) - 1), len(ids) - 1


def test_paper_protocol_equals_the_reference_loop(tiny_lm, corpus):
    model, tok = tiny_lm
    seq_len = 16
    # LLM-Pruner / Shortened LLaMA: tokenizer("\n\n".join(rows)), non-overlapping windows, partial one dropped.
    ids = tok("\n\n".join(corpus.documents), return_tensors="pt").input_ids[0].tolist()
    nll = count = 0.0
    for i in range(len(ids) // seq_len):
        s, c = _loss(model, ids[i * seq_len:(i + 1) * seq_len])
        nll, count = nll + s, count + c
    expected = math.exp(nll / count)
    result = perplexity(model, tok, corpus, "paper", seq_len, batch_size=3)  # ragged last batch on purpose
    assert result.windows == len(ids) // seq_len and result.tokens_scored == count
    assert result.ppl == pytest.approx(expected, rel=1e-5)
    assert perplexity(model, tok, corpus, "paper", seq_len).ppl == pytest.approx(expected, rel=1e-5)


def test_paper_bos_every_equals_the_reference_loop(tiny_lm, corpus):
    model, tok = tiny_lm
    seq_len = 16
    # Shortened LLaMA's process_data(add_bos_to_every=True): windows of seq_len text tokens, BOS before each.
    ids = tok("\n\n".join(corpus.documents), add_special_tokens=False).input_ids
    step = seq_len
    nll = count = 0.0
    for i in range(len(ids) // step):
        s, c = _loss(model, [tok.bos_token_id] + ids[i * step:(i + 1) * step])
        nll, count = nll + s, count + c
    result = perplexity(model, tok, corpus, "paper", seq_len, bos_every=True, batch_size=4)
    assert result.ppl == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert result.windows == len(ids) // step and result.tokens_scored == result.windows * seq_len


def test_limit_keeps_the_first_windows(tiny_lm, corpus):
    model, tok = tiny_lm
    ids = tok("\n\n".join(corpus.documents)).input_ids
    nll = count = 0.0
    for i in range(3):
        s, c = _loss(model, ids[i * 16:(i + 1) * 16])
        nll, count = nll + s, count + c
    result = perplexity(model, tok, corpus, "paper", 16, limit=3)
    assert result.windows == 3 and result.ppl == pytest.approx(math.exp(nll / count), rel=1e-5)


@pytest.mark.parametrize("seq_len,stride", [(32, 8), (24, 24), (40, 13)])
def test_sliding_protocol_equals_the_hf_strided_loop(tiny_lm, seq_len, stride):
    model, tok = tiny_lm
    corpus = Corpus([line.strip() for line in PTB_LINES], "ptb", "test", "test", separator=" ")
    # The Hugging Face perplexity guide, verbatim in spirit: labels -100 on the context already scored.
    enc = tok(" ".join(corpus.documents), return_tensors="pt").input_ids
    total = enc.size(1)
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, total, stride):
        end = min(begin + seq_len, total)
        trg_len = end - prev_end
        input_ids = enc[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids, use_cache=False).loss
        valid = (target_ids[:, 1:] != -100).sum().item()
        nll_sum += loss.item() * valid
        n_tokens += valid
        prev_end = end
        if end == total:
            break
    result = perplexity(model, tok, corpus, "sliding", seq_len, stride, batch_size=2)
    assert result.tokens_scored == n_tokens
    if stride < seq_len:
        assert n_tokens == total - 1
    assert result.ppl == pytest.approx(math.exp(nll_sum / n_tokens), rel=1e-5)


@pytest.mark.parametrize("n,seq_len,stride", [(10, 4, 3), (100, 32, 8), (33, 32, 16), (5, 32, 8), (2, 8, 3)])
def test_sliding_windows_score_each_token_once(n, seq_len, stride):
    windows = sliding_windows(n, seq_len, stride)
    scored = [t for w in windows for t in range(w.target, w.end)]
    assert scored == list(range(1, n))
    assert all(w.end - w.start <= seq_len and w.target > w.start for w in windows)


def test_sliding_windows_with_stride_equal_to_length_skip_window_starts():
    windows = sliding_windows(10, 4, 4)
    assert [(w.start, w.end, w.target) for w in windows] == [(0, 4, 1), (4, 8, 5), (8, 10, 9)]


def test_paper_windows_drop_the_partial_one():
    assert [(w.start, w.end) for w in paper_windows(50, 16)] == [(0, 16), (16, 32), (32, 48)]
    assert [(w.start, w.end, w.bos) for w in paper_windows(50, 16, bos_every=True)] == [
        (0, 16, True), (16, 32, True), (32, 48, True)]
    assert len(paper_windows(50, 16, limit=2)) == 2 and paper_windows(10, 16) == []


@pytest.mark.parametrize("kwargs,message", [
    ({"protocol": "nope"}, "unknown perplexity protocol"),
    ({"protocol": "sliding", "seq_len": 16, "stride": 32}, "--stride 32"),
    ({"protocol": "sliding", "bos_every": True}, "--bos-every only applies"),
    ({"protocol": "paper", "seq_len": 100_000}, "less than one window"),
])
def test_bad_options_are_data_errors(tiny_lm, corpus, kwargs, message):
    model, tok = tiny_lm
    with pytest.raises(DataError, match=message):
        perplexity(model, tok, corpus, **kwargs)


@pytest.mark.parametrize("protocol, bos_every, stride", [("paper", False, None), ("paper", True, None),
                                                         ("sliding", False, 7), ("sliding", False, 20)])
def test_no_row_is_longer_than_seq_len(protocol, bos_every, stride):
    """What ``eval`` checks against the model's context: the longest row fed is --seq-len, plus the --bos-every BOS."""
    from shortllm.evaluation.perplexity import plan_windows

    windows = plan_windows(1000, protocol, 20, stride, bos_every, None, "text")
    assert max(w.end - w.start + w.bos for w in windows) == 20 + bos_every
