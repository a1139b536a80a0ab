"""Calibration windows and packed blocks, with the real embedded tokenizer."""

from __future__ import annotations

import pytest
import torch

from shortllm.data import Corpus, calibration_windows, load_documents, pack_documents
from shortllm.errors import DataError


@pytest.fixture(scope="module")
def pydoc_train():
    return load_documents("pydoc", "train")


def test_windows_shape_and_determinism(tokenizer, pydoc_train):
    a = calibration_windows(tokenizer, pydoc_train, n_samples=6, seq_len=32, seed=7)
    b = calibration_windows(tokenizer, pydoc_train, n_samples=6, seq_len=32, seed=7)
    assert a.shape == (6, 32) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert not torch.equal(a, calibration_windows(tokenizer, pydoc_train, n_samples=6, seq_len=32, seed=8))


def test_defaults_match_the_paper(tokenizer, pydoc_train):
    assert calibration_windows(tokenizer, pydoc_train).shape == (10, 128)


def test_windows_are_spans_of_distinct_documents(tokenizer, pydoc_train):
    windows = calibration_windows(tokenizer, pydoc_train, n_samples=5, seq_len=16, seed=3)
    docs = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in pydoc_train.documents]
    sources = set()
    for row in windows.tolist():
        hits = [i for i, ids in enumerate(docs)
                if any(ids[s:s + 16] == row for s in range(len(ids) - 15))]
        assert hits
        sources.add(hits[0])
    assert len(sources) == 5


def test_add_bos_puts_bos_first(tokenizer, pydoc_train):
    windows = calibration_windows(tokenizer, pydoc_train, n_samples=3, seq_len=20, add_bos=True)
    assert windows.shape == (3, 20)
    assert (windows[:, 0] == tokenizer.bos_token_id).all()


def test_short_documents_fall_back_to_joined_text(tokenizer):
    corpus = Corpus(["one two three four five"] * 20, "short", "all", "builtin")
    windows = calibration_windows(tokenizer, corpus, n_samples=4, seq_len=12)
    assert windows.shape == (4, 12)


def test_too_little_text_says_how_much(tokenizer):
    corpus = Corpus(["tiny", "text"], "small", "all", "builtin")
    with pytest.raises(DataError, match=r"only \d+ tokens in all, but one calibration sample needs 128"):
        calibration_windows(tokenizer, corpus)


@pytest.mark.parametrize(("n", "length"), [(0, 8), (4, 0), (-1, 8)])
def test_non_positive_sizes(tokenizer, pydoc_train, n, length):
    with pytest.raises(DataError, match="positive"):
        calibration_windows(tokenizer, pydoc_train, n_samples=n, seq_len=length)


def test_reuses_documents_only_when_needed(tokenizer):
    corpus = Corpus([" ".join(["word"] * 50)], "one", "all", "builtin")
    assert calibration_windows(tokenizer, corpus, n_samples=3, seq_len=10).shape == (3, 10)


def test_pack_documents_puts_eos_between_documents(tokenizer):
    docs = ["alpha beta gamma", "", "delta epsilon", "zeta"]
    corpus = Corpus(docs, "toy", "all", "builtin")
    ids = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs if d]
    eos = tokenizer.eos_token_id
    stream = ids[0] + [eos] + ids[1] + [eos] + ids[2] + [eos]
    blocks = pack_documents(tokenizer, corpus, seq_len=4)
    assert blocks.shape == (len(stream) // 4, 4) and blocks.dtype == torch.long
    assert blocks.flatten().tolist() == stream[: blocks.numel()]
    plain = pack_documents(tokenizer, corpus, seq_len=2, add_eos=False)
    assert eos not in plain.flatten().tolist()


def test_pack_documents_needs_one_full_block(tokenizer):
    with pytest.raises(DataError, match="less than one block of 1000"):
        pack_documents(tokenizer, Corpus(["hi"], "toy", "all", "builtin"), seq_len=1000)
