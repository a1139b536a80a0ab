"""Token windows longer than the model's context: every verb ends in the same one-line error, before any work.

The tiny models have 256 positions (tests/tiny_models.py). Llama's RoPE computes any position, so without the
check a 512-token retrain silently trains past the context; gpt2's position table ends in an IndexError.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import run_cli
from tests.tiny_models import tiny_model
from tests.training.helpers import make_tiny_model_with_tokenizer, write_small_text

LIMIT = "(256 positions)"


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory) -> Path:
    """A tiny 4-block llama (256 positions) with a small BPE tokenizer of its own."""
    return make_tiny_model_with_tokenizer(tmp_path_factory.mktemp("ctx-llama") / "tiny")


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    return write_small_text(tmp_path_factory.mktemp("ctx-text") / "small.txt")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A tiny gpt2 (a learned table of 256 positions, spelled n_positions), without a tokenizer."""
    path = tmp_path_factory.mktemp("ctx-gpt2")
    tiny_model("gpt2").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def short_teacher(tmp_path_factory, tok_model) -> Path:
    """The tiny llama with its tokenizer, told it has only 128 positions (RoPE: no weight depends on it)."""
    path = tmp_path_factory.mktemp("ctx-teacher") / "teacher"
    shutil.copytree(tok_model, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 128}))
    return path


def test_score_calibration(tok_model, tmp_path):
    result = run_cli("score", "-m", tok_model, "--seq-len", "512", "--out", tmp_path / "o", "--device", "cpu")
    assert_one_line_error(result, f"--seq-len 512 is longer than the context of {tok_model} {LIMIT}",
                          "Use --seq-len 256 or less.")
    assert not (tmp_path / "o").exists()


def test_prune_calibration(tok_model, tmp_path):
    result = run_cli("prune", "-m", tok_model, "-k", "1", "--seq-len", "300", "--add-bos", "--out", tmp_path / "o",
                     "--device", "cpu")
    assert_one_line_error(result, f"--seq-len 300 is longer than the context of {tok_model} {LIMIT}",
                          "Use --seq-len 256 or less.")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, asked, most", [
    (["--seq-len", "512"], "--seq-len 512", 256),
    # --bos-every windows are BOS + seq_len text tokens (the reference's ppl_bos): 256 + 1 is one too many
    (["--seq-len", "256", "--bos-every"], "--seq-len 256 + the BOS of --bos-every", 255),
    (["--ppl-protocol", "sliding"], "--seq-len 2048 (the default of --ppl-protocol sliding)", 256),
    (["--ppl-protocol", "sliding", "--seq-len", "300", "--stride", "100"], "--seq-len 300", 256),
])
def test_eval_perplexity(tok_model, tmp_path, args, asked, most):
    result = run_cli("eval", "-m", tok_model, "--ppl", "pydoc", "--tasks", "none", "--device", "cpu",
                     "--out", tmp_path / "o", *args)
    assert_one_line_error(result, f"{asked} is longer than the context of {tok_model} {LIMIT}",
                          f"Use --seq-len {most} or less.")
    assert not (tmp_path / "o").exists()


def test_eval_longest_window_that_fits_runs(tok_model):
    result = run_cli("eval", "-m", tok_model, "--ppl", "pydoc", "--tasks", "none", "--device", "cpu", "--seq-len",
                     "255", "--bos-every", "--limit", "1", "--json")
    assert result.exit_code == 0, result.output


def test_eval_generate(tok_model, tmp_path):
    from transformers import AutoTokenizer

    prompt = len(AutoTokenizer.from_pretrained(tok_model)("The river")["input_ids"])
    result = run_cli("eval", "-m", tok_model, "--ppl", "none", "--tasks", "none", "--device", "cpu",
                     "--generate", "The river", "--max-new-tokens", "300", "--out", tmp_path / "o")
    assert_one_line_error(result, f"--generate ({prompt} tokens) + --max-new-tokens 300 is longer than the context",
                          f"Use --max-new-tokens {256 - prompt} or less.")
    assert not (tmp_path / "o").exists()


def test_bench(tok_model, tmp_path):
    result = run_cli("bench", "-m", tok_model, "--prompt-len", "200", "--new-tokens", "100", "--device", "cpu",
                     "--out", tmp_path / "o")
    assert_one_line_error(result, f"--prompt-len 200 + --new-tokens 100 = 300 tokens is longer than the context of "
                                  f"{tok_model} {LIMIT}", "Use --new-tokens 56 or less.")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("model", ["tok_model", "gpt2_dir"])
@pytest.mark.parametrize("method", ["cpt", "lora"])
def test_retrain(request, text, tmp_path, model, method):
    path = request.getfixturevalue(model)
    result = run_cli("retrain", "-M", method, "-m", path, "--data", text, "--seq-len", "512", "--max-steps", "1",
                     "--device", "cpu", "--out", tmp_path / "o")
    assert_one_line_error(result, f"--seq-len 512 is longer than the context of {path} {LIMIT}",
                          "Use --seq-len 256 or less.")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_retrain_kd_teacher(tok_model, short_teacher, text, tmp_path):
    result = run_cli("retrain", "-M", "kd", "-m", tok_model, "--teacher", short_teacher, "--data", text,
                     "--seq-len", "200", "--max-steps", "1", "--device", "cpu", "--out", tmp_path / "o")
    assert_one_line_error(result, f"--seq-len 200 is longer than the context of the teacher {short_teacher} "
                                  "(128 positions)", "Use --seq-len 128 or less.")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
