"""``retrain --max-time``: a schedule over the time spent, a stop before the step that would end past the limit,
resume, the two-process agreement and the CLI's checks."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from shortllm.cli.app import app
from shortllm.training import TrainingError, retrain
from shortllm.training import loop
from shortllm.training.schedule import BudgetSchedule, schedule_factor
from shortllm.training.checkpoints.state import conform
from tests.training.helpers import quick_config, torchrun


class SimulatedClock:
    """The loop's clock, advancing ``step_s / 2`` per reading: the loop reads it once when a session starts and
    twice per step (for the stop decision, before the optimizer update, and for the wall time after it), so every
    step takes ``step_s``. ``first_reading_s``: the first reading of each session comes that much later (a slow
    first step)."""

    def __init__(self, step_s: float = 10.0, first_reading_s: float | None = None):
        self.now, self.half, self.first, self.readings = 1000.0, step_s / 2, first_reading_s, 0

    def __call__(self) -> float:
        self.readings += 1
        slow = self.first is not None and self.readings == 2  # reading 1 is the session's start
        self.now += self.first if slow else self.half
        return self.now

    def new_session(self) -> None:
        self.readings = 0


@pytest.fixture
def simulated_clock(monkeypatch):
    clock = SimulatedClock()
    monkeypatch.setattr(loop, "_clock", clock)
    return clock


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_progress_schedule_is_transformers_step_schedule_over_progress(kind):
    """At progress step/T, with a warm-up share of W/T, the factor equals transformers' schedule at step s."""
    from transformers.optimization import (get_cosine_with_min_lr_schedule_with_warmup,
                                           get_linear_schedule_with_warmup)

    total, warmup = 40, 2
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = (get_linear_schedule_with_warmup(opt, warmup, total) if kind == "linear" else
           get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total, min_lr_rate=0.1))
    for step in range(total + 1):
        expected = ref.lr_lambdas[0](step)
        assert schedule_factor(step / total, warmup / total, kind, 0.1) == pytest.approx(expected, abs=1e-12)


def test_budget_schedule_sets_each_groups_lr_and_round_trips_its_state():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW([{"params": params[:1], "lr": 1e-3}, {"params": params[1:], "lr": 2e-3}])
    sched = BudgetSchedule(opt, "cosine", 0.1)
    assert sched.get_last_lr() == [0.0, 0.0]  # warm-up starts at 0, as transformers' does
    opt.step()  # (no gradients: nothing changes) the order torch expects before a scheduler step
    sched.advance(0.5, 7)
    q = (0.5 - 0.05) / 0.95
    factor = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * q))  # by hand
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 * factor, 2e-3 * factor], rel=1e-12)
    again = BudgetSchedule(opt, "cosine", 0.1)
    saved = conform(json.loads(json.dumps(sched.state_dict())), again.state_dict(), "scheduler")  # as resume reads it
    again.load_state_dict(saved)
    assert again.progress == 0.5 and again.get_last_lr() == sched.get_last_lr()
    sched.advance(2.0, 30)  # past the end: stays at the floor
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4, rel=1e-12)


def test_budget_schedule_warms_up_by_steps_when_given_them():
    """--warmup-steps 2 --max-time: lr = step/2 of the peak for the first 2 steps (by steps, whatever the clock
    says), then the decay from the progress reached then (0.2) to 1."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = BudgetSchedule(opt, "cosine", 0.1, warmup_steps=2)
    lrs = [sched.get_last_lr()[0]]
    for progress, steps in ((0.1, 1), (0.2, 2), (0.6, 3), (1.0, 4)):
        opt.step()
        sched.advance(progress, steps)
        lrs.append(sched.get_last_lr()[0])
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)), 0.1], abs=1e-12)


@pytest.mark.parametrize("limit, steps", [(60.0, 6), (65.0, 6), (69.9, 6), (70.0, 7)])
def test_run_stops_before_the_step_that_would_end_past_the_limit(pruned_tiny, small_text, tmp_path,
                                                                 simulated_clock, limit, steps):
    """10 s per step: step k ends at 10k s, and the step after it would end at 10k + 10; the run takes it only
    when that is within the limit (the decision is made at 10k - 5 s, before the optimizer update, and adds
    the update's measured 5 s)."""
    cfg = quick_config("cpt", pruned_tiny, small_text, tmp_path / "o", max_steps=100, max_time=limit)
    result = retrain(cfg)
    assert result.finished and result.time_up and result.steps == steps and result.total_steps == 100
    assert result.wall_time_s == 10.0 * steps <= limit


def test_time_limited_lr_follows_the_progress(pruned_tiny, small_text, tmp_path, simulated_clock):
    cfg = quick_config("cpt", pruned_tiny, small_text, tmp_path / "o", max_steps=100, max_time=60.0, lr=1e-3)
    result = retrain(cfg)
    assert result.steps == 6 and result.warmup_steps is None
    assert (tmp_path / "o" / "model.safetensors").exists()
    lrs = [p["lr"] for p in result.loss_curve]
    assert lrs[0] == 0.0
    for k, lr in enumerate(lrs[1:], start=1):  # the lr of step k+1 follows the progress after step k
        progress = max(k / 100, (10 * k - 5) / 60)
        q = (progress - 0.05) / 0.95
        assert lr == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * q))), rel=1e-9)
    manifest = json.loads((tmp_path / "o" / "shortllm.json").read_text())
    assert manifest["results"]["time_up"] is True and manifest["results"]["max_time_s"] == 60.0
    assert "60.0 s on 1 process (limit 60 s, --max-time)" in (tmp_path / "o" / "README.md").read_text()


@pytest.mark.parametrize("options", [{"grad_accum": 2}, {"keep_best": True, "eval_every": 2},
                                     {"optimizer_in_backward": True}], ids=["grad-accum", "keep-best", "in-backward"])
def test_time_budget_ends_runs_with_the_loop_options(pruned_tiny, small_text, tmp_path, simulated_clock, options):
    """The clock reading travels with the loss sums, which every option's step still reduces once: the run ends
    after step 6 of a 60 s budget (10 s per step) with each of them, and --keep-best still evaluates that step."""
    cfg = quick_config("cpt", pruned_tiny, small_text, tmp_path / "o", max_steps=100, max_time=60.0, **options)
    result = retrain(cfg)
    assert result.finished and result.time_up and result.steps == 6 and result.wall_time_s == 60.0
    assert result.eval_curve[-1]["step"] == 6
    if options.get("keep_best"):
        assert result.best["step"] in (2, 4, 6)


def test_step_budget_still_ends_a_time_limited_run_first(pruned_tiny, small_text, tmp_path, simulated_clock):
    result = retrain(quick_config("cpt", pruned_tiny, small_text, tmp_path / "o", max_steps=3, max_time=600.0))
    assert result.finished and not result.time_up and result.steps == 3


def test_resumed_time_limited_run_ends_where_an_uninterrupted_one_does(pruned_tiny, small_text, tmp_path,
                                                                       simulated_clock):
    base = quick_config("lora", pruned_tiny, small_text, tmp_path / "a", max_steps=100, max_time=60.0, lr=1e-3,
                        save_every=2)
    whole = retrain(base)
    split = replace(base, out=tmp_path / "b")
    first = retrain(replace(split, stop_after=3))
    assert not first.finished and first.wall_time_s == 30.0
    resumed = retrain(replace(split, resume=True))
    assert resumed.finished and resumed.time_up and resumed.steps == whole.steps == 6
    for a, b in zip(whole.loss_curve, resumed.loss_curve, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-6 and a["lr"] == b["lr"]
    assert abs(whole.final_eval_loss - resumed.final_eval_loss) < 1e-6


def test_resumed_session_estimates_its_first_step_from_the_checkpoint(pruned_tiny, small_text, tmp_path,
                                                                     simulated_clock):
    """Every session's first step is slow here (its first reading 25 s after the start instead of 5). The
    resumed session's first decision uses the pace saved in the checkpoint (10 s), not its own slow first step
    (25 s), which would stop it two steps early."""
    simulated_clock.first = 25.0
    cfg = quick_config("cpt", pruned_tiny, small_text, tmp_path / "o", max_steps=100, max_time=100.0, save_every=1)
    first = retrain(replace(cfg, stop_after=3))
    assert first.wall_time_s == 30 + 10 + 10  # steps 1 (slow), 2, 3
    simulated_clock.new_session()
    resumed = retrain(replace(cfg, resume=True))
    # step 4 is read at 50 + 25 = 75 s: 75 + 10 (pace) + 5 (update) <= 100; step 5 at 85 s; step 6 at 95 s stops
    assert resumed.time_up and resumed.steps == 6 and resumed.wall_time_s == 100.0


def test_resume_refuses_a_checkpoint_of_another_time_budget(pruned_tiny, small_text, tmp_path, simulated_clock):
    cfg = quick_config("cpt", pruned_tiny, small_text, tmp_path / "o", max_steps=100, max_time=60.0)
    retrain(replace(cfg, stop_after=1))
    with pytest.raises(TrainingError, match=r"another run \(max_time: 60.0 there, 120.0 now\)"):
        retrain(replace(cfg, max_time=120.0, resume=True))


@pytest.mark.parametrize("args, message", [
    (["--max-time", "0"], "--max-time 0 must be a positive number of seconds"),
    (["--max-time", "ten minutes"], "--max-time 'ten minutes' is not a duration"),
    (["--max-time", "-5"], "--max-time -5 must be a positive number of seconds"),
    (["--max-time", "inf"], "--max-time 'inf' is not a duration"),
])
def test_bad_time_budgets_are_one_line_errors(pruned_tiny, small_text, tmp_path, args, message):
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["retrain", "--method", "cpt", "-m", str(pruned_tiny), "--data", str(small_text),
                                   "--out", str(out), *args])
    assert res.exit_code == 2 and message in res.output and not out.exists()


@pytest.mark.parametrize("text, seconds", [("600", 600.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0)])
def test_durations_are_read_in_seconds_minutes_or_hours(text, seconds):
    from shortllm.cli.retrain import _seconds

    assert _seconds(text, "--max-time") == seconds


def test_cli_time_budget_ends_the_run_and_says_so(pruned_tiny, small_text, tmp_path):
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["retrain", "--method", "cpt", "-m", str(pruned_tiny), "--data", str(small_text),
                                   "--seq-len", "32", "--batch-size", "2", "--max-eval-rows", "2",
                                   "--max-steps", "100000", "--max-time", "3s", "--eval-every", "0",
                                   "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "(the --max-time limit of 3s)" in res.output
    results = json.loads((out / "shortllm.json").read_text())["results"]
    assert results["time_up"] and 1 <= results["steps"] < 100000 and results["wall_time_s"] < 3.0 + 1.0


SKEWED_CLOCKS = """
import os
import sys

from shortllm.training import loop

now, half_step = [0.0], 5.0 if os.environ["RANK"] == "0" else 50.0  # rank 1's steps look ten times longer


def clock():
    now[0] += half_step
    return now[0]


loop._clock = clock
from shortllm.cli.app import main

sys.argv[0] = "shortllm"
main()
"""


@pytest.mark.slow
def test_two_processes_stop_at_the_step_the_main_process_chooses(pruned_tiny, small_text, tmp_path):
    """Rank 0's clock says 10 s per step, rank 1's 100 s: by its own clock rank 1 would stop after one step and
    leave rank 0 waiting in an all-reduce; both follow rank 0's clock and stop after 6 steps of a 60 s budget."""
    script = tmp_path / "skewed.py"
    script.write_text(SKEWED_CLOCKS)
    proc = torchrun(script, "-q", "retrain", "--method", "cpt", "-m", pruned_tiny, "--data", small_text,
                    "--seq-len", "32", "--batch-size", "2", "--max-steps", "100", "--max-time", "60",
                    "--max-eval-rows", "4", "--eval-every", "0", "--save-every", "0", "--device", "cpu",
                    "--out", tmp_path / "two", "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "two" / "shortllm.json").read_text())["results"]
    assert results["world_size"] == 2 and results["time_up"] and results["steps"] == 6
    assert results["wall_time_s"] == 60.0
