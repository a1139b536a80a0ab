"""Fixtures of the training tests (the tiny models come from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.helpers import make_pruned, make_tiny_model_with_tokenizer, write_small_text


@pytest.fixture(scope="session")
def small_text(tmp_path_factory) -> Path:
    return write_small_text(tmp_path_factory.mktemp("text") / "small.txt")


@pytest.fixture(scope="session")
def tiny_bpe_dir(tmp_path_factory) -> Path:
    """A tiny 4-block llama with a 512-token BPE tokenizer of its own (fast to train on CPU)."""
    return make_tiny_model_with_tokenizer(tmp_path_factory.mktemp("tiny-bpe"))


@pytest.fixture(scope="session")
def pruned_tiny(tmp_path_factory, tiny_bpe_dir) -> Path:
    """tiny_bpe_dir with block 3 removed: a pruned folder whose shortllm.json names its source."""
    return make_pruned(tiny_bpe_dir, tmp_path_factory.mktemp("pruned") / "pruned", [3])


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every training test runs on one thread (see ``one_thread`` in tests/conftest.py)."""
