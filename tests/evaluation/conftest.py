"""Fixtures for the evaluation tests: a tiny model that reads text, and a tiny data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.evaluation.helpers import save_tiny_lm, write_data_dir


@pytest.fixture(autouse=True)
def hub_answers(monkeypatch):
    """The hub "answers" shortllm's reachability probe without a connection: these tests read local task data
    only and never touch the network (lm-eval's hub downloads are tested offline in tests/cli/test_offline.py)."""
    from shortllm.data import offline

    monkeypatch.setattr(offline, "_answers", lambda host, port: True)
    offline.forget_reachability()
    yield
    offline.forget_reachability()


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, demo_dir) -> Path:
    """A saved tiny random 4-block llama with the embedded tokenizer (max 256 positions)."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-lm"), demo_dir)


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_dir):
    """(model, tokenizer) of :func:`tiny_lm_dir`, float32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(tiny_lm_dir)


@pytest.fixture
def data_root(tmp_path) -> Path:
    """A data directory in the shared layout with tiny copies of every dataset and task."""
    return write_data_dir(tmp_path / "data")
