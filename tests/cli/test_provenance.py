"""Recorded provenance works from anywhere.

A model pruned from a relative path records the absolute path, so `retrain --method kd` run from another
directory finds its teacher; adapters name their base model by absolute path; the model card's ``base_model``
is a valid hub id when the source is a hub model (the embedded model counts as its hub original) and absent
otherwise, checked with huggingface_hub's own model-card parser.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.utils import validate_repo_id

from shortllm.models import demo
from shortllm.models.loading import ModelSource, resolve_source
from shortllm.pruning.export import model_card
from tests.cli.test_retrain import QUICK
from tests.conftest import run_cli
from tests.training.helpers import make_tiny_model_with_tokenizer, write_small_text


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("provenance")
    make_tiny_model_with_tokenizer(root / "models" / "tiny")
    write_small_text(root / "small.txt")
    (root / "elsewhere").mkdir()
    return root


def test_relative_source_is_recorded_absolute_and_kd_finds_it_from_elsewhere(tree, monkeypatch, tmp_path):
    monkeypatch.chdir(tree / "models")
    out = tmp_path / "pruned"
    result = run_cli("prune", "-m", "tiny", "--blocks", "1", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    source = json.loads((out / "shortllm.json").read_text())["source"]
    assert source["spec"] == str((tree / "models" / "tiny").resolve()) and source["given"] == "tiny"
    assert source["hub_id"] is None and source["kind"] == "dir"
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model is None  # a local path is not a hub id: no base_model at all
    assert "base_model" not in card.content.split("---")[1]

    monkeypatch.chdir(tree / "elsewhere")
    result = run_cli("retrain", "--method", "kd", "-m", out, "--data", tree / "small.txt", *QUICK,
                     "--out", tmp_path / "healed", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["teacher"] == str((tree / "models" / "tiny").resolve())


def test_adapter_names_its_base_by_absolute_path(tree, monkeypatch, tmp_path):
    monkeypatch.chdir(tree)
    out = tmp_path / "adapter"
    result = run_cli("retrain", "--method", "lora", "-m", "models/tiny", "--data", "small.txt", *QUICK,
                     "--save-adapter", "--out", out)
    assert result.exit_code == 0, result.stderr
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).is_absolute() and Path(base) == (tree / "models" / "tiny").resolve()
    manifest = json.loads((out / "shortllm.json").read_text())
    assert manifest["source"]["spec"] == base


def test_moved_working_directory_symlink(tree, monkeypatch, tmp_path):
    # The recorded path has its symlinks resolved, so it survives the link being removed.
    link = tmp_path / "link"
    link.symlink_to(tree / "models", target_is_directory=True)
    source = resolve_source(str(link / "tiny"))
    assert source.ref == str((tree / "models" / "tiny").resolve())


def test_hub_and_alias_sources_record_the_hub_id():
    hub = resolve_source("Qwen/Qwen2.5-0.5B", revision="main")
    assert hub.record() == {"spec": "Qwen/Qwen2.5-0.5B", "given": "Qwen/Qwen2.5-0.5B", "kind": "hub",
                            "path": "Qwen/Qwen2.5-0.5B", "hub_id": "Qwen/Qwen2.5-0.5B", "revision": "main"}
    alias = ModelSource(demo.DEMO_ALIAS, "alias", "/cache/models/smollm2-135m")
    assert alias.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct" and alias.ref == demo.DEMO_ALIAS
    gguf = ModelSource("x.gguf", "gguf", "/cache/models/gguf-x")
    assert gguf.hub_id is None and Path(gguf.ref).is_absolute()


@pytest.mark.parametrize("base", ["HuggingFaceTB/SmolLM2-135M-Instruct", None])
def test_model_card_metadata_is_valid(base):
    text = model_card("short", base or "/models/tiny", [1], [0, 2], 3, 100, 70, "blocks chosen by hand",
                      "shortllm prune --blocks 1", base_model=base)
    card = ModelCard(text)
    assert card.data.library_name == "transformers" and "depth-pruning" in card.data.tags
    assert card.data.base_model == base
    if base:
        validate_repo_id(card.data.base_model)


def test_copying_a_pruned_folder_keeps_its_teacher(tree, tmp_path, monkeypatch):
    # A folder copied elsewhere still names its teacher absolutely.
    monkeypatch.chdir(tree / "models")
    out = tmp_path / "p"
    assert run_cli("prune", "-m", "./tiny", "--blocks", "2", "--out", out, "--device", "cpu").exit_code == 0
    moved = tmp_path / "moved" / "p"
    shutil.copytree(out, moved)
    monkeypatch.chdir(tmp_path)
    from shortllm.training.inputs import original_model

    teacher = original_model(json.loads((moved / "shortllm.json").read_text()))
    assert resolve_source(teacher).path == str((tree / "models" / "tiny").resolve())
