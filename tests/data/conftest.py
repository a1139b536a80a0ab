"""Fixtures for the data tests: the embedded tokenizer and a tiny data directory in the shared layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

WIKI_LINES = [" \n", " = Title = \n", " \n", " First paragraph , with @-@ tokens . \n", " \n",
              " = = Section = = \n", " \n", " Second paragraph . \n"]
PTB_LINES = [" the cat sat on the mat \n", " a dog ran N miles <unk> \n"]


@pytest.fixture(autouse=True)
def hub_answers(monkeypatch):
    """The hub "answers" shortllm's reachability probe without a connection: the data tests fake the hub
    (``datasets.load_dataset``) and never touch the network; tests of the offline path patch it back."""
    from shortllm.data import offline

    monkeypatch.setattr(offline, "_answers", lambda host, port: True)
    offline.forget_reachability()
    yield
    offline.forget_reachability()


@pytest.fixture(scope="session")
def tokenizer():
    """The real tokenizer of the embedded SmolLM2-135M (already converted in the shortllm cache)."""
    from transformers import AutoTokenizer

    from shortllm.models.demo import demo_model_dir

    return AutoTokenizer.from_pretrained(demo_model_dir())


@pytest.fixture
def layout_dir(tmp_path: Path) -> Path:
    """A data directory in the SHORTLLM_DATA_DIR layout: wikitext valid/test, ptb all three, c4 train."""
    wiki = tmp_path / "wikitext-2-raw"
    wiki.mkdir()
    for split in ("valid", "test"):
        (wiki / f"wiki.{split}.raw").write_text("".join(WIKI_LINES), encoding="utf-8")
    ptb = tmp_path / "ptb"
    ptb.mkdir()
    for split in ("train", "valid", "test"):
        (ptb / f"ptb.{split}.txt").write_text("".join(PTB_LINES), encoding="utf-8")
    pre = tmp_path / "pretrain"
    pre.mkdir()
    rows = [{"text": f"document {i} about things", "url": f"u{i}"} for i in range(3)]
    (pre / "c4_en_train_first1000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path
