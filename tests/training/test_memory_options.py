"""--optimizer-in-backward (no gradients held) and --teacher-dtype (a 16-bit teacher computed in float32)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from shortllm.training import TrainingError, retrain
from shortllm.training.config import KDOptions
from shortllm.training.step_in_backward import StepInBackward
from shortllm.training.objectives.teacher import store_teacher
from tests.conftest import run_cli
from tests.tiny_models import tiny_model
from tests.training.helpers import quick_config
from tests.training.test_heal_methods import _resumes_exactly

NO_CLIP = 1e9  # the in-backward step cannot clip; the reference run must not clip either


@pytest.mark.parametrize("method, extra", [("cpt", {}), ("kd", {}), ("cpt", {"gradient_checkpointing": True}),
                                           ("lora", {})])
def test_step_in_backward_equals_the_step_after_backward(method, extra, pruned_tiny, small_text, tmp_path):
    cfg = quick_config(method, pruned_tiny, small_text, tmp_path / "a", max_steps=4, lr=1e-2, max_grad_norm=NO_CLIP,
                       max_eval_rows=4, **extra)
    after = retrain(cfg)
    inside = retrain(replace(cfg, out=tmp_path / "b", optimizer_in_backward=True))
    for a, b in zip(after.loss_curve, inside.loss_curve, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-6 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-5 * a["grad_norm"]
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    start = load_file(pruned_tiny / "model.safetensors")
    changed = [key for key in wb if not torch.equal(start[key], wb[key])]
    assert len(changed) == (len(wb) if method != "lora" else sum(1 for k in wb if "proj" in k))  # LoRA: merged
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=1e-5)


def test_at_most_one_gradient_exists_during_the_backward(pruned_tiny, small_text, tmp_path, monkeypatch):
    held: list[int] = []
    step = StepInBackward._step

    def counting(self, param):
        held.append(sum(p.grad is not None for g in self.optimizer.param_groups for p in g["params"]))
        step(self, param)

    monkeypatch.setattr(StepInBackward, "_step", counting)
    retrain(quick_config("kd", pruned_tiny, small_text, tmp_path / "o", max_steps=2, optimizer_in_backward=True))
    from transformers import AutoModelForCausalLM

    tensors = len(list(AutoModelForCausalLM.from_pretrained(pruned_tiny).parameters()))  # the tied one once
    assert len(held) == 2 * tensors  # one update per parameter per step
    assert max(held) == 1  # the one being updated: no other gradient is held


def test_step_in_backward_resumes_exactly_with_a_16_bit_teacher(pruned_tiny, small_text, tmp_path):
    cfg = quick_config("kd", pruned_tiny, small_text, tmp_path / "x", max_steps=4, lr=1e-3, save_every=2,
                       optimizer_in_backward=True, kd=KDOptions(teacher_dtype="bfloat16"))
    _resumes_exactly(cfg, tmp_path)


@pytest.mark.parametrize("loaded_narrow", [False, True])
def test_store_teacher_keeps_16_bit_weights_and_computes_in_float32(loaded_narrow):
    torch.manual_seed(0)
    teacher = tiny_model("llama", 3, tie_word_embeddings=True)
    assert teacher.lm_head.weight is teacher.model.embed_tokens.weight
    rounded = tiny_model("llama", 3, tie_word_embeddings=True)
    rounded.load_state_dict(teacher.state_dict())
    for p in rounded.parameters():
        p.data = p.data.to(torch.bfloat16).float()
    buffers = {k: v.clone() for k, v in teacher.named_buffers()}
    unique = sum(p.numel() for p in teacher.parameters())

    if loaded_narrow:  # as retrain loads it: in bfloat16 already
        for p in teacher.parameters():
            p.data = p.data.to(torch.bfloat16)
    saved = store_teacher(teacher.eval(), "bfloat16", torch.float32)

    assert saved == 2 * unique
    assert all(p.dtype == torch.bfloat16 for p in teacher.parameters())
    assert teacher.lm_head.weight is teacher.model.embed_tokens.weight
    ids = torch.randint(0, teacher.config.vocab_size, (2, 12))
    with torch.no_grad():
        logits = teacher(input_ids=ids).logits
        expected = rounded.eval()(input_ids=ids).logits
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert all(p.dtype == torch.bfloat16 for p in teacher.parameters())  # swapped back after the forward
    for k, v in teacher.named_buffers():
        assert v.dtype == buffers[k].dtype and torch.equal(v, buffers[k])
    assert store_teacher(teacher, None) == 0 and store_teacher(tiny_model("llama", 2), "float32") == 0


def test_stored_teacher_survives_a_failing_forward():
    teacher = tiny_model("llama", 2, tie_word_embeddings=True).eval()
    store_teacher(teacher, "bfloat16")
    ids = torch.randint(0, teacher.config.vocab_size, (1, 6))
    down = teacher.model.layers[1].mlp.down_proj
    forward = down.forward

    def failing(x):
        assert down.weight.dtype == torch.float32  # widened for the call...
        raise RuntimeError("out of memory")

    with torch.no_grad():
        before = teacher(input_ids=ids).logits
        down.forward = failing
        with pytest.raises(RuntimeError, match="out of memory"):
            teacher(input_ids=ids)
        down.forward = forward
        assert all(p.dtype == torch.bfloat16 for p in teacher.parameters())  # ...and narrowed again
        torch.testing.assert_close(teacher(input_ids=ids).logits, before, atol=0, rtol=0)


def test_float16_teacher_out_of_range_is_refused():
    teacher = tiny_model("llama", 2)
    with torch.no_grad():
        teacher.model.layers[0].mlp.down_proj.weight[0, 0] = 1e6
    with pytest.raises(TrainingError, match="beyond float16's range"):
        store_teacher(teacher, "float16")


def test_16_bit_teacher_from_the_cli(pruned_tiny, small_text, tmp_path):
    args = ["retrain", "--method", "kd", "-m", pruned_tiny, "--data", small_text, "--seq-len", "32", "--batch-size",
            "2", "--max-steps", "2", "--max-eval-rows", "2", "--device", "cpu"]
    full = run_cli(*args, "--out", tmp_path / "f32")
    half = run_cli(*args, "--teacher-dtype", "bfloat16", "--optimizer-in-backward", "--out", tmp_path / "bf16")
    assert full.exit_code == 0 and half.exit_code == 0, half.stderr
    f32 = json.loads((tmp_path / "f32" / "shortllm.json").read_text())
    bf16 = json.loads((tmp_path / "bf16" / "shortllm.json").read_text())
    assert bf16["options"]["kd"]["teacher_dtype"] == "bfloat16" and bf16["options"]["optimizer_in_backward"]
    card = (tmp_path / "bf16" / "README.md").read_text()
    assert "stored in bfloat16, computed in the precision it was loaded in" in card and "no gradient clipping" in card
    kl32, kl16 = f32["results"]["loss_curve"][0]["kl"], bf16["results"]["loss_curve"][0]["kl"]
    assert kl16 != kl32 and abs(kl16 - kl32) < 0.05 * kl32  # the same teacher, its weights rounded once


@pytest.mark.parametrize("change, message", [
    ({"grad_accum": 2, "optimizer_in_backward": True}, "--grad-accum keeps every gradient"),
    ({"mixed_precision": "fp16", "optimizer_in_backward": True}, "fp16's loss scaling"),
    ({"kd": KDOptions(teacher_dtype="int8")}, "unknown --teacher-dtype 'int8'"),
])
def test_bad_combinations_are_refused(change, message, pruned_tiny, small_text, tmp_path):
    with pytest.raises(TrainingError, match=message):
        retrain(quick_config("kd", pruned_tiny, small_text, tmp_path / "o", **change))
    assert not (tmp_path / "o").exists()


def test_teacher_dtype_only_for_kd(pruned_tiny, small_text, tmp_path):
    with pytest.raises(TrainingError, match="--teacher-dtype only applies to --method kd"):
        retrain(quick_config("cpt", pruned_tiny, small_text, tmp_path / "o", kd=KDOptions(teacher_dtype="bfloat16")))


def test_gradient_checkpointing_also_chunks_the_head(pruned_tiny, small_text, tmp_path, monkeypatch):
    from shortllm.training.objectives import losses

    plain = retrain(quick_config("kd", pruned_tiny, small_text, tmp_path / "a", max_steps=2, lr=1e-3))
    sizes: list[int] = []
    chunk = losses._chunk

    def recording(student_h, *args):
        sizes.append(student_h.shape[0])
        return chunk(student_h, *args)

    monkeypatch.setattr(losses, "_chunk", recording)
    vocab = 512  # the tiny BPE model's
    monkeypatch.setattr(losses, "CHECKPOINTED_CHUNK_ELEMENTS", 16 * vocab)
    ckpt = retrain(quick_config("kd", pruned_tiny, small_text, tmp_path / "b", max_steps=2, lr=1e-3,
                                gradient_checkpointing=True))
    assert max(sizes) == 16 and len(sizes) > 4  # 2 x 31 predicted positions a step: several 16-token chunks
    for a, b in zip(plain.loss_curve, ckpt.loss_curve, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["kl"] - b["kl"]) < 1e-5


def test_a_stored_teacher_head_is_widened_in_slices_never_whole(monkeypatch):
    import shortllm.training.objectives.teacher as teacher_module

    torch.manual_seed(0)
    teacher = tiny_model("llama", 2, tie_word_embeddings=True).eval()
    rounded = tiny_model("llama", 2, tie_word_embeddings=True)
    rounded.load_state_dict(teacher.state_dict())
    for p in rounded.parameters():
        p.data = p.data.to(torch.bfloat16).float()
    head = teacher.lm_head.weight
    monkeypatch.setattr(teacher_module, "WIDE_SLICE_ELEMENTS", head.shape[1] * 7)  # 7 rows a slice; only the head
    store_teacher(teacher, "bfloat16", torch.float32)
    seen: list[torch.dtype] = []
    teacher.lm_head.register_forward_hook(lambda m, _a, _o: seen.append(m.weight.dtype))
    ids = torch.randint(0, teacher.config.vocab_size, (2, 9))
    with torch.no_grad():
        logits = teacher(input_ids=ids).logits
        expected = rounded.eval()(input_ids=ids).logits
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32  # the whole head was never widened
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert teacher.vocab_size % 7 and head.shape[0] > 7  # several slices, the last one shorter
    assert teacher.model.layers[0].mlp.up_proj.forward.__self__ is teacher.model.layers[0].mlp.up_proj  # head only
