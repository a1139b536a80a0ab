"""Loading is strict: a checkpoint that does not cover the model exactly is refused.

Every way a checkpoint can fail to cover a model is built on a tiny saved model: an extra name prefix (as
adapter tooling leaves), a missing tensor, a missing untied head, an unexpected tensor, a tensor of the wrong
shape, a shard named by the index but absent. Each is refused by every path that loads weights, through the
CLI (prune, score, eval, bench, retrain's teacher) with one line and exit 2, nothing written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from shortllm.errors import ModelLoadError
from shortllm.models.loading import load_model
from tests.cli.test_bad_input import assert_one_line_error, leftovers
from tests.conftest import run_cli, tree_digest
from tests.tiny_models import tiny_model


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / "model.safetensors", metadata={"format": "pt"})


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good")
    tiny_model("llama", 4).save_pretrained(path)
    return path


def _variant(good_dir: Path, tmp_path: Path, change) -> Path:
    path = tmp_path / "model"
    shutil.copytree(good_dir, path)
    tensors = load_file(path / "model.safetensors")
    _save(path, change(tensors))
    return path


def _prefixed(t):
    return {"base_model.model." + k: v for k, v in t.items()}


def _missing_block_tensor(t):
    return {k: v for k, v in t.items() if k != "model.layers.2.mlp.down_proj.weight"}


def _missing_head(t):  # the tiny llama's head is untied, so it must be in the file
    return {k: v for k, v in t.items() if k != "lm_head.weight"}


def _unexpected(t):
    return {**t, "model.layers.9.mlp.down_proj.weight": torch.zeros(4, 4)}


def _wrong_shape(t):
    return {**t, "model.layers.1.self_attn.q_proj.weight": torch.zeros(8, 8)}


CASES = {
    "prefix": (_prefixed, ["missing", "unexpected", "base_model.model."]),
    "missing": (_missing_block_tensor, ["1 missing", "model.layers.2.mlp.down_proj.weight"]),
    "untied head": (_missing_head, ["1 missing", "lm_head.weight"]),
    "unexpected": (_unexpected, ["1 unexpected", "model.layers.9.mlp.down_proj.weight"]),
    "wrong shape": (_wrong_shape, ["wrong shape", "model.layers.1.self_attn.q_proj.weight", "(8, 8)"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_load_model_refuses(good_dir, tmp_path, case):
    change, needles = CASES[case]
    path = _variant(good_dir, tmp_path, change)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(path))
    for needle in needles:
        assert needle in info.value.one_line()


def test_good_checkpoint_loads_exactly(good_dir):
    model = load_model(str(good_dir)).model
    saved = load_file(good_dir / "model.safetensors")
    state = model.state_dict()
    assert set(saved) == set(state)
    assert all(torch.equal(saved[k], state[k]) for k in saved)


def test_tied_head_absent_from_file_is_fine(tmp_path):
    # gemma ties its head to the embeddings: the file holds no lm_head and that is declared ignorable.
    tiny_model("gemma", 2).save_pretrained(tmp_path)
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    model = load_model(str(tmp_path)).model
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_sharded_checkpoint_missing_a_shard(good_dir, tmp_path):
    path = tmp_path / "sharded"
    tiny_model("llama", 4).save_pretrained(path, max_shard_size="20KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    # A shard dropped from the index but still on disk: its tensors are missing from the load.
    dropped = shards[1]
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != dropped}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="missing"):
        load_model(str(path))


@pytest.mark.parametrize("verb, case", [("prune", "prefix"), ("score", "wrong shape"), ("eval", "missing"),
                                        ("bench", "unexpected")])
def test_every_verb_refuses(good_dir, tmp_path, case, verb):
    path = _variant(good_dir, tmp_path, CASES[case][0])
    before = tree_digest(path)
    out = tmp_path / "outputs"
    out.mkdir()
    args = {
        "prune": ["prune", "-m", path, "--blocks", "1", "--out", out / "o"],
        "score": ["score", "-m", path, "--criterion", "magnitude", "--out", out / "o"],
        "eval": ["eval", "-m", path, "--ppl", "pydoc", "--tasks", "none", "--out", out / "o"],
        "bench": ["bench", "-m", path, "--batch-sizes", "1", "--new-tokens", "2", "--prompt-len", "4",
                  "--out", out / "o"],
    }[verb]
    result = run_cli(*args, "--device", "cpu")
    assert_one_line_error(result, "do not match its architecture")
    assert leftovers(out) == []
    assert tree_digest(path) == before


def test_teacher_is_loaded_strictly(good_dir, tiny_tok_dir, tmp_path):
    # A teacher with the student's tokenizer but a truncated state dict: refused before any training.
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_tok_dir, teacher)
    tensors = load_file(teacher / "model.safetensors")
    _save(teacher, _missing_block_tensor(tensors))
    result = run_cli("retrain", "-m", tiny_tok_dir, "--method", "kd", "--teacher", teacher, "--max-steps", "1",
                     "--seq-len", "32", "--batch-size", "1", "--out", tmp_path / "healed", "--device", "cpu")
    assert_one_line_error(result, "teacher" if "teacher" in result.stderr else "do not match", "1 missing")
    assert not (tmp_path / "healed").exists()
