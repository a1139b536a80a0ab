"""The healing methods on tiny models: partial-layer training, hidden-state distillation, teacher
correction; their resume equals an uninterrupted run; two processes equal one for hidden-state KD."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from shortllm.errors import TrainingError
from shortllm.training import retrain
from shortllm.training.config import KDOptions
from shortllm.training.freeze import cuts_of, freeze_except, resolve_blocks
from shortllm.optim import param_groups
from tests.tiny_models import tiny_model
from tests.training.helpers import quick_config, torchrun


def test_train_blocks_specs():
    model = tiny_model("llama", 6)
    model.config.shortllm = {"kept_blocks": [0, 1, 4, 5, 6, 9], "original_num_blocks": 10}
    assert cuts_of([0, 1, 4, 5, 6, 9], 10) == [2, 5]
    assert resolve_blocks("last:2", model.config, 6) == [4, 5]
    assert resolve_blocks("first:1", model.config, 6) == [0]
    assert resolve_blocks("around-cuts:1", model.config, 6) == [1, 2, 4, 5]
    assert resolve_blocks("from-cut:0", model.config, 6) == [2, 3, 4, 5]
    assert resolve_blocks("from-cut:1", model.config, 6) == [1, 2, 3, 4, 5]
    assert resolve_blocks("0,2-3", model.config, 6) == [0, 2, 3]
    assert resolve_blocks("all", model.config, 6) == list(range(6))
    for bad in ("last:0", "middle:2", "3-9", "from-cut:-1"):
        with pytest.raises(TrainingError, match="train-blocks"):
            resolve_blocks(bad, model.config, 6)
    model.config.shortllm = {"kept_blocks": list(range(6)), "original_num_blocks": 6}
    with pytest.raises(TrainingError, match="records no removed block"):
        resolve_blocks("from-cut:0", model.config, 6)
    model.config.shortllm = {"kept_blocks": list(range(6)), "original_num_blocks": 8}  # cut only at the end
    assert cuts_of(list(range(6)), 8) == [6]
    with pytest.raises(TrainingError, match="only after the last kept block"):
        resolve_blocks("from-cut:0", model.config, 6)
    assert resolve_blocks("from-cut:2", model.config, 6) == [4, 5]
    del model.config.shortllm
    for spec in ("around-cuts:1", "from-cut:0"):
        with pytest.raises(TrainingError, match="no pruning provenance"):
            resolve_blocks(spec, model.config, 6)


def test_frozen_parameters_are_not_in_the_optimizer():
    model = tiny_model("llama", 4)
    record = freeze_except(model, [3], train_head=True)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    expected = {id(p) for p in model.model.layers[3].parameters()} | {id(model.lm_head.weight),
                                                                        id(model.model.norm.weight)}
    assert trainable == expected
    assert {id(p) for g in param_groups(model, 0.1) for p in g["params"]} == expected
    assert record["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_partial_training_changes_only_the_chosen_blocks(pruned_tiny, small_text, tmp_path):
    out = tmp_path / "o"
    result = retrain(quick_config("cpt", pruned_tiny, small_text, out, max_steps=3, lr=1e-2, train_blocks="last:1"))
    before, after = load_file(pruned_tiny / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.layers.2.") for k in changed)
    assert result.partial["blocks"] == [2] and result.trainable_params == sum(
        v.numel() for k, v in before.items() if k.startswith("model.layers.2."))
    assert result.loss_path == "chunked head" and result.peak_rss_mb > 0


def test_kd_on_every_block_leaves_embeddings_norm_and_head_as_they_were(pruned_tiny, small_text, tmp_path):
    # the recommended recipe (block+kd+blocks): --train-blocks all without --train-head
    out = tmp_path / "o"
    result = retrain(quick_config("kd", pruned_tiny, small_text, out, max_steps=3, lr=1e-2, train_blocks="all"))
    before, after = load_file(pruned_tiny / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    blocks = {k for k in before if k.startswith("model.layers.")}
    assert {k for k in blocks if k.endswith("proj.weight")} <= changed  # every block's projections trained
    assert not changed - blocks  # embeddings, final norm (and a head, tied or not) byte-identical
    assert result.trainable_params == sum(v.numel() for k, v in before.items() if k in blocks)


def _resumes_exactly(cfg, tmp_path):
    whole = retrain(replace(cfg, out=tmp_path / "a"))
    first = retrain(replace(cfg, out=tmp_path / "b", stop_after=2))
    assert not first.finished
    resumed = retrain(replace(cfg, out=tmp_path / "b", resume=True))
    assert resumed.finished and resumed.resumed_from.endswith("step-0000002")
    for a, b in zip(whole.loss_curve, resumed.loss_curve, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-6
    assert abs(whole.final_eval_loss - resumed.final_eval_loss) < 1e-6
    return whole


def test_hidden_kd_objective_and_resume(pruned_tiny, small_text, tmp_path):
    kd = KDOptions(alpha=0.5, hidden="nmse", hidden_weight=2.0)
    whole = _resumes_exactly(quick_config("kd", pruned_tiny, small_text, tmp_path / "x", max_steps=4, kd=kd,
                                          lr=1e-3, save_every=2), tmp_path)
    p = whole.loss_curve[-1]
    assert p["hidden"] > 0 and math.isclose(p["loss"], 0.5 * p["kl"] + 0.5 * p["ce"] + 2.0 * p["hidden"],
                                            rel_tol=1e-9)


def test_partial_training_resume(pruned_tiny, small_text, tmp_path):
    _resumes_exactly(quick_config("cpt", pruned_tiny, small_text, tmp_path / "x", max_steps=4, lr=1e-3,
                                  save_every=2, train_blocks="around-cuts:1", train_head=True), tmp_path)


def test_teacher_warmup_resume_and_effect(pruned_tiny, small_text, tmp_path):
    cfg = quick_config("kd", pruned_tiny, small_text, tmp_path / "x", max_steps=4, lr=1e-3, save_every=2,
                       kd=KDOptions(teacher_warmup_steps=2))
    warmed = _resumes_exactly(cfg, tmp_path)
    plain = retrain(replace(cfg, out=tmp_path / "c", kd=KDOptions()))
    assert abs(plain.loss_curve[0]["kl"] - warmed.loss_curve[0]["kl"]) > 1e-6  # another teacher


def test_new_options_refused_where_they_do_not_apply(pruned_tiny, small_text, tmp_path):
    with pytest.raises(TrainingError, match="--kd-hidden only applies to --method kd"):
        retrain(quick_config("cpt", pruned_tiny, small_text, tmp_path / "o", kd=KDOptions(hidden="nmse")))
    with pytest.raises(TrainingError, match="LoRA trains adapters"):
        retrain(quick_config("lora", pruned_tiny, small_text, tmp_path / "o", train_blocks="last:1"))
    with pytest.raises(TrainingError, match="unknown --kd-hidden"):
        retrain(quick_config("kd", pruned_tiny, small_text, tmp_path / "o", kd=KDOptions(hidden="l1")))
    with pytest.raises(TrainingError, match="outside blocks"):
        retrain(quick_config("cpt", pruned_tiny, small_text, tmp_path / "o", train_blocks="7"))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_processes_follow_one_for_hidden_kd(pruned_tiny, small_text, tmp_path):
    """torchrun --nproc_per_node 2 (gloo), batch 2 x 2 processes == 1 process with batch 2 x grad-accum 2, with
    the chunked head and --kd-hidden (hooks on the DDP-wrapped student)."""
    common = ["--method", "kd", "-m", pruned_tiny, "--data", small_text, "--seq-len", "32", "--batch-size", "2",
              "--max-steps", "3", "--max-eval-rows", "4", "--eval-every", "0", "--save-every", "0",
              "--device", "cpu", "--lr", "1e-3", "--kd-alpha", "0.5", "--kd-hidden", "cosine"]
    single = retrain(quick_config("kd", pruned_tiny, small_text, tmp_path / "one", max_steps=3, grad_accum=2,
                                  max_eval_rows=4, lr=1e-3, kd=KDOptions(alpha=0.5, hidden="cosine")))
    proc = torchrun("-m", "shortllm.cli.app", "-q", "retrain", *common, "--out", tmp_path / "two", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = json.loads((tmp_path / "two" / "shortllm.json").read_text())["results"]
    assert two["world_size"] == 2
    for a, b in zip(single.loss_curve, two["loss_curve"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["hidden"] - b["hidden"]) < 1e-5
    assert abs(single.final_eval_loss - two["final_eval_loss"]) < 1e-5


def test_held_out_rows_are_sized_to_the_run(pruned_tiny, small_text, tmp_path):
    from shortllm.training.data.rows import eval_rows_for

    assert [eval_rows_for(n, None) for n in (None, 8, 80, 1000)] == [32, 4, 8, 32]
    assert eval_rows_for(80, 16) == 16  # --max-eval-rows wins
    result = retrain(quick_config("cpt", pruned_tiny, small_text, tmp_path / "o", max_steps=3, max_eval_rows=None))
    assert result.data["eval_rows"] == 4  # 3 steps x 2 rows: a tenth, at least 4
