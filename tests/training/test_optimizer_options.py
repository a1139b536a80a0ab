"""``retrain --adam-betas`` and ``--lr-schedule linear``: the LoRA reference's optimizer (HF Trainer defaults)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from shortllm.training import TrainingError, retrain
from shortllm.training.config import validate
from tests.conftest import run_cli
from tests.training.helpers import quick_config


def test_linear_schedule_decays_to_zero_after_warmup(pruned_tiny, small_text, tmp_path):
    cfg = quick_config("cpt", pruned_tiny, small_text, tmp_path / "o", max_steps=5, warmup_steps=1,
                       lr_schedule="linear")
    lrs = [p["lr"] for p in retrain(cfg).loss_curve]  # the rate each step used
    # transformers' get_linear_schedule_with_warmup: step/warmup, then (total - step)/(total - warmup)
    assert lrs == pytest.approx([0.0, 1e-4, 0.75e-4, 0.5e-4, 0.25e-4], abs=1e-12)
    cosine = [p["lr"] for p in retrain(replace(cfg, out=tmp_path / "c", lr_schedule="cosine")).loss_curve]
    assert cosine[2] != pytest.approx(lrs[2])  # the default is still the cosine


def test_adam_betas_reach_the_optimizer_and_the_manifest(pruned_tiny, small_text, tmp_path, monkeypatch):
    seen = []
    real = torch.optim.AdamW

    def spy(*args, **kwargs):
        seen.append(kwargs["betas"])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    out = tmp_path / "o"
    result = run_cli("retrain", "--method", "cpt", "-m", pruned_tiny, "--data", small_text, "--out", out,
                     "--seq-len", "32", "--batch-size", "2", "--max-steps", "1", "--max-eval-rows", "2",
                     "--save-every", "0", "--device", "cpu", "--adam-betas", "0.9,0.999", "--lr-schedule", "linear")
    assert result.exit_code == 0, result.stderr
    assert seen == [(0.9, 0.999)]
    options = json.loads((out / "shortllm.json").read_text())["options"]
    assert options["betas"] == [0.9, 0.999] and options["lr_schedule"] == "linear"


@pytest.mark.parametrize("change, message", [
    ({"betas": (0.9, 1.0)}, r"--adam-betas 0.9,1.0 must be two numbers in 0..1"),
    ({"betas": (0.9,)}, r"--adam-betas 0.9 must be two numbers"),
    ({"lr_schedule": "step"}, r"unknown --lr-schedule 'step'"),
])
def test_bad_values_are_refused(change, message, tmp_path):
    cfg = quick_config("cpt", tmp_path, tmp_path / "t.txt", tmp_path / "o")
    with pytest.raises(TrainingError, match=message):
        validate(replace(cfg, **change))


def test_bad_betas_text_is_one_line(tmp_path):
    result = run_cli("retrain", "--method", "cpt", "--adam-betas", "0.9;0.99", "--out", tmp_path / "o")
    assert result.exit_code == 2 and result.stderr == ("error: --adam-betas '0.9;0.99' is not two numbers. "
                                                       "E.g. --adam-betas 0.9,0.999.\n")


def test_every_training_optimizer_is_fused_where_torch_has_the_kernel(pruned_tiny, small_text, tmp_path, monkeypatch):
    # the foreach AdamW holds a whole-model float32 temporary during step() (394 MiB on 110M parameters): the
    # student's, the teacher warm-up's and the replacement block's optimizers all take the fused kernel instead
    seen = []
    real = torch.optim.AdamW

    def spy(*args, **kwargs):
        seen.append(kwargs.get("fused"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    cfg = quick_config("kd", pruned_tiny, small_text, tmp_path / "o", max_steps=1)
    retrain(replace(cfg, kd=replace(cfg.kd, teacher_warmup_steps=1)))
    assert seen == [True, True]  # the teacher's warm-up, then the student's


def test_fused_adamw_steps_like_the_default(tmp_path):
    from shortllm.optim import adamw

    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(64, 32)), torch.nn.Parameter(torch.randn(32))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused, default = adamw(a, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1), torch.optim.AdamW(
        b, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    assert fused.defaults["fused"] is True
    for _ in range(3):
        grads = [torch.randn_like(p) for p in a]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        default.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("value, expected", [(None, []), ("", []), ("0", []), ("x", []), ("1", [(-3, 1 << 20)]),
                                             ("8", [(-3, 8 << 20)])])
def test_mmap_threshold_is_fixed_only_when_asked(value, expected, monkeypatch):
    # a fixed 1 MiB threshold cost 36% of kd's tokens/s (benchmarks/malloc_tradeoff.py): glibc's default stays
    import ctypes
    import sys

    from shortllm.training.run import release_freed_memory

    calls = []

    class Libc:
        def mallopt(self, option, size):
            calls.append((option, size))

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    monkeypatch.setattr(sys, "platform", "linux")
    if value is None:
        monkeypatch.delenv("SHORTLLM_MMAP_THRESHOLD_MB", raising=False)
    else:
        monkeypatch.setenv("SHORTLLM_MMAP_THRESHOLD_MB", value)
    release_freed_memory()
    assert calls == expected
