"""kd with frozen leading blocks: the teacher takes the student's hidden state after the blocks both hold
bit-identical and frozen, instead of computing them again (``forward.shared_prefix``). The losses are those of
the full teacher; anything that makes the prefixes differ turns the sharing off."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from accelerate import Accelerator

from shortllm.models.surgery import drop_blocks
from shortllm.training import retrain
from shortllm.training.objectives.forward import loss_setup, micro_losses, shared_prefix
from shortllm.training.freeze import freeze_except
from shortllm.training.objectives.losses import IGNORE
from tests.tiny_models import tiny_inputs, tiny_model
from tests.training.helpers import quick_config


def _pair(arch: str = "llama", train: tuple[int, ...] = (2,), train_head: bool = False):
    teacher = tiny_model(arch, 5, seed=4).requires_grad_(False)
    student = copy.deepcopy(teacher)
    drop_blocks(student, [3])  # student blocks 0, 1, 2, 4 of the teacher
    student.config.shortllm = {"kept_blocks": [0, 1, 2, 4], "original_num_blocks": 5}
    student.requires_grad_(True)
    freeze_except(student, list(train), train_head=train_head)
    return student.train(), teacher.eval()


def test_the_prefix_is_what_both_hold_frozen_and_equal():
    assert shared_prefix(*_pair()) == 2
    assert shared_prefix(*_pair(train=(1, 3))) == 1
    assert shared_prefix(*_pair(train=(3,))) == 3  # blocks 0-2 came from the teacher's 0-2
    assert shared_prefix(*_pair(train=(0,))) == 0
    assert shared_prefix(*_pair(train_head=True)) == 0  # tied head = the input embedding, trained
    student, teacher = _pair()
    with torch.no_grad():
        teacher.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-6
    assert shared_prefix(student, teacher) == 1
    with torch.no_grad():
        teacher.model.norm.weight[0] += 1e-6  # outside the blocks: nothing is shared
    assert shared_prefix(student, teacher) == 0
    student, teacher = _pair()
    assert shared_prefix(student, teacher.to(torch.bfloat16)) == 0
    student, teacher = _pair()
    student.config.attention_dropout = 0.1
    assert shared_prefix(student, teacher) == 0
    student, teacher = _pair()
    student.config.router_jitter_noise = 0.01  # MoE routing jitter in train mode (Mixtral, PhiMoE)
    assert shared_prefix(student, teacher) == 0


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_losses_equal_the_full_teacher_and_the_prefix_is_not_run(arch):
    student, teacher = _pair(arch)
    accelerator = Accelerator(cpu=True)
    ids = tiny_inputs(student.config, batch=3, seq=12, seed=6)
    batch = {"input_ids": ids, "labels": ids.clone()}
    batch["labels"][0, :4] = IGNORE
    shared = loss_setup(accelerator, student, teacher)
    assert shared.shared == 2
    calls = []
    hooks = [teacher.model.layers[i].self_attn.register_forward_hook(lambda *a, i=i: calls.append(i))
             for i in range(5)]
    first = micro_losses(student, teacher, shared, batch, accelerator.autocast, with_teacher=True)
    assert sorted(set(calls)) == [0, 1, 2, 3, 4]  # the first forward checks the prefix on real data
    assert shared.shared == 2 and shared.shared_checked
    calls.clear()
    got = micro_losses(student, teacher, shared, batch, accelerator.autocast, with_teacher=True)
    assert sorted(set(calls)) == [2, 3, 4]
    for a, b in zip(got, first):
        assert torch.equal(a, b), (a, b)
    whole = replace(shared, shared=0, shared_tap=None)
    calls.clear()
    want = micro_losses(student, teacher, whole, batch, accelerator.autocast, with_teacher=True)
    assert sorted(set(calls)) == [0, 1, 2, 3, 4]
    for h in hooks:
        h.remove()
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6), (a, b)
    ce, kl, _, count = got
    assert kl > 0 and count == (batch["labels"][:, 1:] != IGNORE).sum()
    kl.backward()  # gradients reach the trained block only
    assert student.model.layers[2].mlp.down_proj.weight.grad is not None
    assert student.model.layers[0].mlp.down_proj.weight.grad is None


def test_a_prefix_that_differs_in_training_turns_the_sharing_off():
    # Something the weights do not show (here a train-mode-only perturbation, as MoE jitter or a hybrid
    # block's training kernel would be) makes the student's prefix output differ: the first forward sees it
    # and the teacher runs whole from then on, so the losses stay the full teacher's.
    student, teacher = _pair()
    accelerator = Accelerator(cpu=True)
    ids = tiny_inputs(student.config, batch=2, seq=10, seed=3)
    batch = {"input_ids": ids, "labels": ids.clone()}
    student.model.layers[1].register_forward_hook(
        lambda m, a, out: (out[0] + 1e-3, *out[1:]) if isinstance(out, tuple) and m.training else
        out + 1e-3 if m.training else out)
    setup = loss_setup(accelerator, student, teacher)
    assert setup.shared == 2
    whole = replace(setup, shared=0, shared_tap=None)
    want = micro_losses(student, teacher, whole, batch, accelerator.autocast, with_teacher=True)
    for _ in range(2):
        got = micro_losses(student, teacher, setup, batch, accelerator.autocast, with_teacher=True)
        assert setup.shared == 0 and setup.shared_tap is None
        for a, b in zip(got, want):
            assert torch.equal(a, b), (a, b)


def test_retrain_shares_the_prefix_with_the_same_result(pruned_tiny, small_text, tmp_path, monkeypatch):
    cfg = quick_config("kd", pruned_tiny, small_text, tmp_path / "a", max_steps=3, lr=1e-3, train_blocks="last:1")
    shared = retrain(cfg)
    assert shared.teacher_shared_blocks == 2
    monkeypatch.setattr("shortllm.training.objectives.forward.shared_prefix", lambda model, teacher: 0)
    whole = retrain(replace(cfg, out=tmp_path / "b"))
    assert whole.teacher_shared_blocks == 0
    for a, b in zip(shared.loss_curve, whole.loss_curve, strict=True):
        assert abs(a["kl"] - b["kl"]) < 1e-6 and abs(a["loss"] - b["loss"]) < 1e-6
    assert abs(shared.final_eval_loss - whole.final_eval_loss) < 1e-6
    full = retrain(replace(cfg, out=tmp_path / "c", train_blocks=None))  # everything trains: nothing shared
    assert full.teacher_shared_blocks == 0
