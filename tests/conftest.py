"""Shared fixtures: tiny saved models, a CLI runner, and the embedded demo model."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shortllm.cli.app import app
from tests.tiny_models import tiny_model

# Off a terminal every long phase logs a progress line every 10 s; on a loaded test machine those lines would
# land in the stderr of tests that assert one-line errors. Tests of the heartbeat set their own interval.
os.environ.setdefault("SHORTLLM_HEARTBEAT_S", "3600")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny random 4-block llama saved as a Hugging Face directory (safetensors, no tokenizer)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(path)
    return path


@pytest.fixture
def one_thread():
    """Run tiny models on one thread: on a busy 2-core machine OpenMP's spinning threads make the tiny matrix
    products of these tests 50-100x slower (measured: 0.4 s vs 44 s for 20 training steps)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tree_digest(path: Path) -> str:
    """Digest of every file name and content under ``path`` (to prove an input is untouched)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def run_cli(*args: str):
    """Invoke the shortllm CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a converted HF directory (converted once per cache)."""
    from shortllm.models.demo import demo_model_dir

    return demo_model_dir()


@pytest.fixture(scope="session")
def tiny_tok_dir(tmp_path_factory, demo_dir) -> Path:
    """A tiny random 6-block llama with the embedded model's tokenizer (so it can read real text)."""
    from transformers import AutoTokenizer

    from tests.tiny_models import tiny_config

    path = tmp_path_factory.mktemp("tiny-llama-tok")
    tok = AutoTokenizer.from_pretrained(demo_dir)
    config = tiny_config("llama", num_layers=6)
    config.vocab_size = len(tok)
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
