"""An output never overlaps an input, nor the current directory.

Every verb refuses, before any work and with one line and exit 2, an --out that is, contains or lies inside
any input (model, teacher, data, data directory, scores, checkpoints), after resolving symlinks and relative
paths; the inputs are left byte for byte as they were.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import run_cli, tree_digest


@pytest.fixture
def work(tmp_path, tiny_llama_dir) -> Path:
    """tmp/models/tiny (a copy of the tiny llama) beside tmp/models/other.txt and tmp/work/."""
    models = tmp_path / "models"
    shutil.copytree(tiny_llama_dir, models / "tiny")
    (models / "other.txt").write_text("a neighbour of the input")
    (tmp_path / "work").mkdir()
    return tmp_path


def _prune(model, out, *extra):
    return run_cli("prune", "-m", model, "--blocks", "1", "--device", "cpu", "--out", out, "--overwrite", *extra)


@pytest.mark.parametrize("out, how", [
    ("models/tiny", "is the input model"),  # replaces the input
    ("models", "contains the input model"),  # deletes the input and its neighbours
    ("models/tiny/pruned", "lies inside the input model"),  # writes into the input folder
    ("models/./tiny/../tiny", "is the input model"),
])
def test_prune_refuses_out_overlapping_the_model(work, out, how):
    before = tree_digest(work / "models")
    result = _prune(work / "models" / "tiny", work / out)
    assert_one_line_error(result, how)
    assert tree_digest(work / "models") == before


def test_symlink_to_the_input_is_caught(work):
    link = work / "work" / "link"
    link.symlink_to(work / "models" / "tiny", target_is_directory=True)
    before = tree_digest(work / "models")
    assert_one_line_error(_prune(work / "models" / "tiny", link), "is the input model")
    assert tree_digest(work / "models") == before and link.is_symlink()


def test_relative_paths_are_resolved(work, monkeypatch):
    monkeypatch.chdir(work / "work")
    before = tree_digest(work / "models")
    assert_one_line_error(_prune("../models/tiny", "../models"), "contains the input model")
    assert tree_digest(work / "models") == before


@pytest.mark.parametrize("out", [".", "..", "./"])
def test_out_is_or_contains_the_current_directory(work, monkeypatch, out):
    monkeypatch.chdir(work / "work")
    (work / "work" / "notes.txt").write_text("the user's own files")
    assert_one_line_error(_prune("../models/tiny", out), "current directory")
    assert (work / "work" / "notes.txt").read_text() == "the user's own files"
    assert Path.cwd() == (work / "work").resolve()


def test_scores_folder_is_an_input(work):
    scores = work / "scores"
    scores.mkdir()
    (scores / "scores.json").write_text("{}")
    result = run_cli("prune", "-m", work / "models" / "tiny", "-k", "1", "--scores", scores, "--out", scores,
                     "--overwrite", "--device", "cpu")
    assert_one_line_error(result, "is the --scores folder")
    assert (scores / "scores.json").read_text() == "{}"


def test_calibration_data_is_an_input(work):
    data = work / "corpus"
    data.mkdir()
    (data / "a.txt").write_text("some text " * 100)
    result = run_cli("score", "-m", work / "models" / "tiny", "--data", data / "a.txt", "--out", data,
                     "--overwrite", "--device", "cpu")
    assert_one_line_error(result, "contains the calibration data")
    assert (data / "a.txt").is_file()


def test_eval_data_dir_and_models_are_inputs(work):
    before = tree_digest(work / "models")
    result = run_cli("eval", "-m", work / "models" / "tiny", "--ppl", "pydoc", "--tasks", "none",
                     "--data-dir", work / "models", "--out", work / "models" / "eval", "--device", "cpu")
    assert_one_line_error(result, "lies inside the")
    result = run_cli("bench", "-m", work / "models" / "tiny", "--out", work / "models" / "tiny", "--overwrite",
                     "--device", "cpu")
    assert_one_line_error(result, "is the model")
    assert tree_digest(work / "models") == before


def test_retrain_inputs_and_checkpoints(work):
    tiny = work / "models" / "tiny"
    before = tree_digest(work / "models")
    base = ["retrain", "-m", tiny, "--method", "cpt", "--max-steps", "1", "--device", "cpu"]
    assert_one_line_error(run_cli(*base, "--out", work / "models", "--overwrite"), "contains the input model")
    teacher = ["retrain", "-m", tiny, "--method", "kd", "--max-steps", "1", "--device", "cpu"]
    assert_one_line_error(run_cli(*teacher, "--teacher", work / "models" / "tiny", "--out", work / "h",
                                  "--checkpoint-dir", tiny / "ckpt"), "checkpoint folder")
    # Checkpoints inside --out would be destroyed by the final write of --out.
    assert_one_line_error(run_cli(*base, "--out", work / "h", "--checkpoint-dir", work / "h" / "ckpt"),
                          "checkpoint folder")
    assert tree_digest(work / "models") == before
    assert not (work / "h").exists()


def test_a_new_folder_beside_the_input_is_fine(work):
    result = _prune(work / "models" / "tiny", work / "models-pruned")
    assert result.exit_code == 0, result.output
    assert (work / "models-pruned" / "config.json").is_file()
    assert os.path.isdir(work / "models" / "tiny")


def test_inputs_reached_through_caches_and_symlinks(work, monkeypatch):
    # A hub id's folder in the hub cache, and the real files behind symlinks (the hub cache layout).
    hub = work / "hubcache"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    assert_one_line_error(_prune("someone/tiny", hub), "contains the input model")
    snap, blobs = work / "hfc" / "snap", work / "hfc" / "blobs"
    blobs.mkdir(parents=True)
    shutil.copytree(work / "models" / "tiny", snap)
    (snap / "model.safetensors").rename(blobs / "w")
    (snap / "model.safetensors").symlink_to(blobs / "w")
    assert_one_line_error(_prune(snap, blobs), "is the input model")
    assert (blobs / "w").is_file()
