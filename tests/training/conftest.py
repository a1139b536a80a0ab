"""Fixtures of the training tests (the tiny models come from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.helpers import make_pruned, write_small_text


@pytest.fixture(scope="session")
def small_text(tmp_path_factory) -> Path:
    return write_small_text(tmp_path_factory.mktemp("text") / "small.txt")


@pytest.fixture(scope="session")
def pruned_tiny(tmp_path_factory, tiny_tok_dir) -> Path:
    """tiny_tok_dir with blocks 4 and 5 removed: a pruned folder whose shortllm.json names its source."""
    return make_pruned(tiny_tok_dir, tmp_path_factory.mktemp("pruned") / "pruned", [4, 5])
