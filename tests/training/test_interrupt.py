"""An interrupted retrain says what it kept and how to continue; no half-written checkpoint stays behind.

The failure guarded against: Ctrl-C during a checkpoint save leaving ``.step-N.tmp`` behind, and the CLI saying
"nothing was written" while the checkpoints it kept were on disk.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shortllm.training.checkpoints import folders as checkpoint
from shortllm.training.data.batches import MemoryBatches
from tests.conftest import run_cli


def _args(pruned: Path, text: Path, out: Path, *extra: str) -> list[str]:
    return [str(a) for a in ["retrain", "--method", "cpt", "-m", pruned, "--data", text, "--seq-len", "32",
                             "--batch-size", "2", "--max-steps", "6", "--max-eval-rows", "2", "--eval-every", "0",
                             "--save-every", "2", "--device", "cpu", "--out", out, *extra]]


def _cli(monkeypatch, args: list[str]):
    """Run the CLI with ``sys.argv`` as a shell would set it (the resume command is built from it)."""
    monkeypatch.setattr(sys, "argv", ["shortllm", *args])
    return run_cli(*args)


def _interrupt_at(monkeypatch, at_step: int) -> None:
    """Ctrl-C when the loop asks for the batch of step ``at_step`` (0-based)."""
    real = MemoryBatches.step

    def step(self, s):
        if s == at_step:
            raise KeyboardInterrupt
        return real(self, s)

    monkeypatch.setattr(MemoryBatches, "step", step)


def _message(result) -> str:
    """The one error line of an interrupted run (the last stderr line; progress lines such as the run's time
    estimate may come before it), without the CLI's prefix ("interrupted (SIGINT): ")."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("interrupted")]
    assert errors == [lines[-1]], result.stderr
    assert all(not line.startswith(("error", "Traceback")) for line in lines), result.stderr
    return lines[-1].split(": ", 1)[1]


def _temps(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob(".*")) if root.exists() else []


def test_interrupt_after_a_checkpoint_names_it_and_the_command_that_resumes(monkeypatch, pruned_tiny, small_text,
                                                                            tmp_path):
    out = tmp_path / "o"
    args = _args(pruned_tiny, small_text, out)
    _interrupt_at(monkeypatch, 4)  # steps 1-4 done, checkpoints after steps 2 and 4
    result = _cli(monkeypatch, args)
    assert result.exit_code == 130, result.stdout + result.stderr
    kept = tmp_path / "o.checkpoints" / "step-0000004"
    command = shlex.join(["shortllm", *args, "--resume"])
    assert _message(result) == (f"stopped at step 4 of 6; kept the checkpoint {kept} (step 4), nothing was "
                                f"written to {out}. To continue, run `{command}`.")
    assert not out.exists() and _temps(tmp_path / "o.checkpoints") == []
    monkeypatch.undo()
    resumed = _cli(monkeypatch, [*shlex.split(command)[1:], "--json"])
    assert resumed.exit_code == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["finished"] and report["steps"] == 6 and report["resumed_from"] == str(kept)


def test_interrupt_before_any_checkpoint_says_nothing_was_written(monkeypatch, pruned_tiny, small_text, tmp_path):
    _interrupt_at(monkeypatch, 1)
    result = _cli(monkeypatch, _args(pruned_tiny, small_text, tmp_path / "o"))
    assert result.exit_code == 130
    assert _message(result) == "stopped at step 1 of 6; nothing was written."
    root = tmp_path / "o.checkpoints"
    assert not (tmp_path / "o").exists() and (not root.exists() or not any(root.iterdir()))


def test_sigint_during_a_checkpoint_save_removes_its_temporary_folder(monkeypatch, pruned_tiny, small_text,
                                                                      tmp_path):
    real, calls = checkpoint.write_optimizer, {"n": 0}

    def interrupted_save(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the second save (step 4): the model file is already in the temporary folder
            assert [p.name for p in (tmp_path / "o.checkpoints").glob(".step-0000004.tmp-*/*")] == [
                "model.safetensors"]
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **kw)

    monkeypatch.setattr(checkpoint, "write_optimizer", interrupted_save)
    # A real Ctrl-C needs Python's own SIGINT handler, whatever earlier tests in this process installed.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        args = _args(pruned_tiny, small_text, tmp_path / "o")
        result = _cli(monkeypatch, args)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls["n"] >= 1, "the checkpoint writer was not called through the patched module"
    assert result.exit_code == 130, result.stdout + result.stderr
    assert calls["n"] == 2
    root = tmp_path / "o.checkpoints"
    assert _temps(root) == [] and sorted(p.name for p in root.iterdir()) == ["step-0000002"]
    assert _message(result).startswith(f"stopped at step 4 of 6; kept the checkpoint {root / 'step-0000002'} "
                                       "(step 2), nothing was written to")


def test_interrupted_overwrite_run_does_not_claim_the_earlier_runs_checkpoints(monkeypatch, pruned_tiny, small_text,
                                                                              tmp_path):
    args = _args(pruned_tiny, small_text, tmp_path / "o")
    assert _cli(monkeypatch, [*args, "--stop-after", "2"]).exit_code == 0
    from shortllm.training import run

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "load_train_data", interrupted)  # before this run has cleared the old ones
    result = _cli(monkeypatch, [*args, "--lr", "1e-3", "--overwrite"])
    assert result.exit_code == 130
    assert _message(result) == "nothing was written."


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_removes_the_temporary_folders_of_dead_saves(monkeypatch, pruned_tiny, small_text, tmp_path):
    root = tmp_path / "o.checkpoints"
    dead = root / f".step-0000004.tmp-{_dead_pid()}"  # killed (SIGKILL) in the middle of a save
    legacy = root / ".step-0000002.tmp"  # the name earlier shortllm versions used
    living = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = root / f".step-0000006.tmp-{living.pid}"  # another process still writing: left alone
        for folder in (dead, legacy, busy):
            folder.mkdir(parents=True)
            (folder / "model.safetensors").write_bytes(b"partial")
        result = _cli(monkeypatch, [*_args(pruned_tiny, small_text, tmp_path / "o"), "--max-steps", "1", "--json"])
        assert result.exit_code == 0, result.stderr
        assert _temps(root) == [busy.name]
    finally:
        living.kill()
        living.wait()


@pytest.mark.parametrize("command,expected", [
    ("shortllm retrain --method cpt --out o", "shortllm retrain --method cpt --out o --resume"),
    ("shortllm retrain --resume --method cpt", "shortllm retrain --resume --method cpt"),
    ("shortllm retrain --out 'my runs/o'", "shortllm retrain --out 'my runs/o' --resume"),
])
def test_resume_command(command, expected):
    from shortllm.training.config import TrainConfig
    from shortllm.training.run import resume_command

    assert resume_command(TrainConfig(method="cpt", command=command)) == expected
