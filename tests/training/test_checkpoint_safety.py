"""Checkpoints hold no pickles: booby-trapped files never run, damaged files are named, resume stays exact.

The failure guarded against: accelerate's ``save_state`` layout read with ``load_state``, which unpickles the
optimizer, scheduler and RNG files, so that a crafted ``custom_checkpoint_0.pkl`` runs code on ``--resume``.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from shortllm.training import retrain
from tests.conftest import run_cli
from tests.training.helpers import quick_config, torchrun

NEW_LAYOUT = ["model.safetensors", "optimizer.safetensors", "rng-rank00000.safetensors", "trainer_state.json"]
# Every file accelerate's save_state wrote (or could write) into a checkpoint folder.
OLD_LAYOUT = ["optimizer.bin", "scheduler.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl",
              "pytorch_model.bin", "scaler.pt", "sampler.bin", "dl_state_dict.bin"]


class _Trap:
    """Unpickling this creates the marker file (what a crafted checkpoint would do with a shell command)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path: Path, marker: Path) -> None:
    """A ``torch.save`` file (what accelerate wrote and ``torch.load`` reads) whose unpickling makes the marker."""
    import torch

    torch.save(_Trap(marker), path)
    assert not marker.exists()


def _args(pruned: Path, text: Path, root: Path, *extra: str) -> list:
    return ["retrain", "--method", "lora", "-m", pruned, "--data", text, "--seq-len", "32", "--batch-size", "2",
            "--max-steps", "3", "--max-eval-rows", "2", "--eval-every", "0", "--save-every", "0",
            "--device", "cpu", "--out", root / "out", "--checkpoint-dir", root / "ck", *extra]


@pytest.fixture(scope="module")
def first_session(tmp_path_factory, pruned_tiny, small_text) -> Path:
    """A lora run stopped after 1 of 3 steps: its checkpoint folder (copied by each test)."""
    import torch

    root = tmp_path_factory.mktemp("first")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_cli(*_args(pruned_tiny, small_text, root, "--stop-after", "1"))
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.stderr
    return root / "ck"


@pytest.fixture
def session(first_session, tmp_path) -> tuple[Path, Path]:
    """(this test's root, its checkpoint folder step-0000001) from a fresh copy of the first session."""
    shutil.copytree(first_session, tmp_path / "ck")
    return tmp_path, tmp_path / "ck" / "step-0000001"


def test_checkpoints_hold_only_safetensors_and_json(session):
    _, folder = session
    assert sorted(p.name for p in folder.iterdir()) == sorted(NEW_LAYOUT)
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
    assert names and all(".lora_" in n for n in names)  # the adapter only: the base weights come from -m
    state = json.loads((folder / "trainer_state.json").read_text())
    assert state["format"] == "shortllm-checkpoint-1" and state["step"] == 1 and state["world_size"] == 1
    assert state["scheduler"]["last_epoch"] == 1


@pytest.mark.parametrize("name", OLD_LAYOUT + NEW_LAYOUT)
def test_a_booby_trapped_pickle_in_any_position_never_runs(session, pruned_tiny, small_text, name):
    """Old file names are not read at all (resume works); a trap in place of a file of ours is named and refused."""
    root, folder = session
    marker = root / "marker"
    _plant(folder / name, marker)
    result = run_cli(*_args(pruned_tiny, small_text, root, "--resume", "--json"))
    assert not marker.exists()
    if name in OLD_LAYOUT:
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["steps"] == 3
        return
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder / name) in lines[0], result.stderr
    assert not (root / "out").exists()


def test_an_accelerate_pickle_checkpoint_is_refused_unread(session, pruned_tiny, small_text):
    """The layout shortllm wrote before: same run identity, accelerate's pickle files, no "format"."""
    root, folder = session
    marker = root / "marker"
    state = json.loads((folder / "trainer_state.json").read_text())
    for key in ("format", "scheduler", "scaler", "sharded"):
        state.pop(key)
    for name in NEW_LAYOUT[1:3]:
        (folder / name).unlink()
    (folder / "trainer_state.json").write_text(json.dumps(state))
    for name in OLD_LAYOUT:
        _plant(folder / name, marker)
    result = run_cli(*_args(pruned_tiny, small_text, root, "--resume"))
    assert not marker.exists()
    assert result.exit_code == 2, result.stderr
    assert "holds accelerate's pickle files (optimizer.bin, scheduler.bin, custom_checkpoint_0.pkl" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_last_byte(path: Path) -> None:  # inside the last tensor's data: the header still parses
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _set_state(**changes):
    def edit(path: Path) -> None:
        state = json.loads(path.read_text())
        path.write_text(json.dumps({**state, **changes}))
    return edit


DAMAGE = [
    ("state binary garbage", "trainer_state.json", lambda p: p.write_bytes(b"\x80\x04garbage{"), "not valid JSON"),
    ("state truncated", "trainer_state.json", _truncate, "not valid JSON"),
    ("state not an object", "trainer_state.json", lambda p: p.write_text("[1, 2]"), "not a JSON object"),
    ("state without step", "trainer_state.json", _set_state(step="one"), "no valid 'step'"),
    ("state bad scheduler", "trainer_state.json", _set_state(scheduler={"last_epoch": 1}), "scheduler"),
    ("state bad curve", "trainer_state.json", _set_state(curve=[1, 2]), "no valid 'curve'"),
    ("state bad data position", "trainer_state.json", _set_state(data_position=[3]), "no valid 'data_position'"),
    ("state step of another folder", "trainer_state.json", _set_state(step=999), "'step' is 999 but the folder"),
    ("state negative step", "trainer_state.json", _set_state(step=-5), "'step' is -5, below 0"),
    ("state no processes", "trainer_state.json", _set_state(world_size=0), "'world_size' is 0, below 1"),
    ("optimizer truncated", "optimizer.safetensors", _truncate, "damaged"),
    ("optimizer flipped", "optimizer.safetensors", _flip_last_byte, "checksum mismatch"),
    ("optimizer missing", "optimizer.safetensors", Path.unlink, "is missing"),
    ("model truncated", "model.safetensors", _truncate, "damaged"),
    ("model flipped", "model.safetensors", _flip_last_byte, "checksum mismatch"),
    ("rng flipped", "rng-rank00000.safetensors", _flip_last_byte, "checksum mismatch"),
]


@pytest.mark.parametrize("name,damage,message", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_a_damaged_checkpoint_file_is_named_in_one_line(session, pruned_tiny, small_text, name, damage, message):
    root, folder = session
    damage(folder / name)
    result = run_cli(*_args(pruned_tiny, small_text, root, "--resume"))
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(folder / name) in lines[0] and message in lines[0], lines[0]
    assert not (root / "out").exists()


@pytest.mark.parametrize("method", ["cpt", "kd"])
def test_cpt_and_kd_resume_where_an_uninterrupted_run_ends(pruned_tiny, small_text, tmp_path, method):
    base = quick_config(method, pruned_tiny, small_text, tmp_path / "a", max_steps=5, lr=1e-3, save_every=2)
    whole = retrain(base)
    split = replace(base, out=tmp_path / "b")
    first = retrain(replace(split, stop_after=3))
    assert not first.finished and first.checkpoint.endswith("step-0000003")
    resumed = retrain(replace(split, resume=True))
    assert resumed.finished and resumed.resumed_from.endswith("step-0000003")
    for a, b in zip(whole.loss_curve, resumed.loss_curve, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-6 and a["lr"] == b["lr"] and a["tokens"] == b["tokens"]
    assert abs(whole.final_eval_loss - resumed.final_eval_loss) < 1e-6


@pytest.mark.slow
def test_two_processes_resume_exactly_with_each_process_random_state(pruned_tiny, small_text, tmp_path):
    """LoRA dropout draws from each process's generator: both processes' RNG states must come back."""
    common = ["-m", "shortllm.cli.app", "-q", "retrain", "--method", "lora", "-m", pruned_tiny, "--data", small_text,
              "--seq-len", "32", "--batch-size", "2", "--max-steps", "4", "--max-eval-rows", "2", "--eval-every", "0",
              "--save-every", "0", "--device", "cpu", "--lr", "1e-3", "--json"]
    whole = torchrun(*common, "--out", tmp_path / "a")
    assert whole.returncode == 0, whole.stderr[-2000:]
    first = torchrun(*common, "--out", tmp_path / "b", "--stop-after", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    folder = tmp_path / "b.checkpoints" / "step-0000002"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*NEW_LAYOUT, "rng-rank00001.safetensors"])
    resumed = torchrun(*common, "--out", tmp_path / "b", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "a" / "shortllm.json").read_text())["results"]
    b = json.loads((tmp_path / "b" / "shortllm.json").read_text())["results"]
    assert b["world_size"] == 2 and b["resumed_from"].endswith("step-0000002")
    for x, y in zip(a["loss_curve"], b["loss_curve"], strict=True):
        assert abs(x["loss"] - y["loss"]) < 1e-6 and x["lr"] == y["lr"]


FSDP2_SCRIPT = textwrap.dedent('''
    """Save and load a checkpoint of an FSDP2-sharded model (uneven and empty shards) on 2 CPU processes."""
    import json, sys
    from pathlib import Path
    import torch
    from accelerate import PartialState
    from accelerate.utils import DistributedType
    from torch.distributed.fsdp import fully_shard
    from shortllm.training.checkpoints.folders import list_checkpoints, load_checkpoint, read_state, save_checkpoint

    state = PartialState(cpu=True)

    class Acc:  # the part of an Accelerator the checkpoint code uses (accelerate runs FSDP on GPUs only)
        is_main_process, process_index = state.is_main_process, state.process_index
        num_processes, device, scaler = state.num_processes, state.device, None
        distributed_type, is_fsdp2 = DistributedType.FSDP, True
        def wait_for_everyone(self): state.wait_for_everyone()
        def unwrap_model(self, model): return model

    def build():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Dropout(0.3), torch.nn.Linear(5, 1))
        for layer in (model[0], model[2]):
            fully_shard(layer)
        fully_shard(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        return model, opt, sched

    def step(model, opt, sched):
        loss = model(torch.randn(4, 6)).pow(2).mean()
        loss.backward(); opt.step(); sched.step(); opt.zero_grad()
        return loss.item()

    acc, root = Acc(), Path(sys.argv[1])
    model, opt, sched = build()
    torch.manual_seed(1 + acc.process_index)  # each process its own data and dropout draws
    for _ in range(2):
        step(model, opt, sched)
    save_checkpoint(acc, root, 2, {"step": 2}, 2, model, opt, sched)
    whole = [step(model, opt, sched) for _ in range(3)]
    model, opt, sched = build()
    path = list_checkpoints(root)[-1][1]
    load_checkpoint(acc, path, json.loads((path / "trainer_state.json").read_text()), model, opt, sched)
    resumed = [step(model, opt, sched) for _ in range(3)]
    report = {"rank": acc.process_index, "whole": whole, "resumed": resumed,
              "files": sorted(p.name for p in path.iterdir())}
    (root.parent / f"report-{acc.process_index}.json").write_text(json.dumps(report))
''')


@pytest.mark.slow
def test_fsdp2_sharded_state_is_saved_per_process_and_resumes_exactly(tmp_path):
    script = tmp_path / "fsdp2.py"
    script.write_text(FSDP2_SCRIPT)
    proc = torchrun(script, tmp_path / "ck")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("report-*.json"))]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    for r in reports:
        assert r["files"] == ["model-rank00000.safetensors", "model-rank00001.safetensors",
                              "optimizer-rank00000.safetensors", "optimizer-rank00001.safetensors",
                              "rng-rank00000.safetensors", "rng-rank00001.safetensors", "trainer_state.json"]
        assert all(abs(a - b) < 1e-6 for a, b in zip(r["whole"], r["resumed"], strict=True)), r
