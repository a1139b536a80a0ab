"""Resumable checkpoints in formats that cannot run code: safetensors for tensors, JSON for everything else.

A checkpoint folder ``step-0000120/`` holds

* ``model.safetensors``: the trained tensors by name (every parameter for cpt/kd, the adapter for lora, and
  persistent buffers). Frozen weights come from the model the run starts from, whose fingerprint is part of the
  run identity. Under FSDP2 each process writes its own shards instead: ``model-rank00003.safetensors``.
* ``optimizer.safetensors`` (or one per process under FSDP2): the optimizer's state tensors as
  ``<parameter index>.<name>``; its metadata holds, as JSON, the parameter groups and the parameter names.
* ``rng-rank00000.safetensors``, one per process: the torch CPU and CUDA generator states and the Python and
  NumPy Mersenne-Twister states.
* ``trainer_state.json``, written last by the main process: the run identity, the loop state (the step is also
  the data position in memory: see :mod:`shortllm.training.data.batches`; a stream's position is ``data_position``),
  tokens seen, wall time, the curves, and the LR scheduler's and fp16 grad scaler's states.

This module names, lists, writes, finds and removes these folders; :mod:`shortllm.training.checkpoints.state` turns each kind
of state into its file and back. Every safetensors file carries a SHA-256 of its tensors and metadata, checked on
load, so a damaged file is named instead of resuming from wrong numbers. Nothing is unpickled: accelerate's
``save_state`` layout (pickled optimizer, scheduler and RNG files) is neither written nor read. A folder is
written as ``.step-NNNNNNN.tmp-PID`` and renamed when complete, so only complete folders have the ``step-`` name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shortllm.training.config import TrainingError
from shortllm.training.checkpoints.state import (
    conform,
    damaged,
    is_sharded,
    restore_model,
    restore_optimizer,
    restore_rng,
    write_model,
    write_optimizer,
    write_rng,
)
from shortllm.wording import plural

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
PREFIX = "step-"
FORMAT = "shortllm-checkpoint-1"  # trainer_state.json's "format": the layout described above
MODEL, OPTIMIZER, RNG = "model", "optimizer", "rng"
# What accelerate's save_state wrote (earlier shortllm checkpoints): pickles, never loaded.
OLD_FILES = ("optimizer.bin", "scheduler.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl")


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint after ``step`` optimizer steps."""
    return f"{PREFIX}{step:07d}"


def numbered_folders(root: Path, prefix: str, marker: str) -> list[tuple[int, Path]]:
    """Complete ``{prefix}{step}`` folders under ``root`` (those holding the file ``marker``, written last) as
    ``(step, folder)``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        step = path.name[len(prefix):]
        if path.is_dir() and path.name.startswith(prefix) and step.isdigit() and (path / marker).is_file():
            found.append((int(step), path))
    return sorted(found)


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, folder)``, oldest first."""
    return numbered_folders(root, PREFIX, STATE_FILE)


def _file(stem: str, rank: int | None) -> str:
    """A file of a checkpoint folder: one for the whole run (``rank`` None) or one per process."""
    return f"{stem}.safetensors" if rank is None else f"{stem}-rank{rank:05d}.safetensors"


def _shard_rank(accelerator: Any, unwrapped: Any) -> tuple[bool, int | None]:
    """Whether the trained state is sharded, and the rank in the model's and optimizer's file names."""
    sharded = is_sharded(unwrapped)
    return sharded, accelerator.process_index if sharded else None


# ---- temporary folders ----------------------------------------------------------------------------------------

def _temps(root: Path) -> list[Path]:
    """The temporary folders of checkpoint saves under ``root`` (``.step-NNNNNNN.tmp-PID``)."""
    return list(root.glob(f".{PREFIX}*.tmp*")) if root.is_dir() else []


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a run starting in this process is not writing a checkpoint
    if os.name == "nt":
        return True  # no harmless liveness probe there: keep the folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temps(root: Path) -> list[Path]:
    """Remove the temporary folders of checkpoint saves whose process is gone (killed mid-save).

    Returns:
        The folders removed.
    """
    removed = []
    for path in _temps(root):
        pid = path.name.rpartition(".tmp-")[2]
        if not pid.isdigit() or not _alive(int(pid)):  # ".tmp" alone: an earlier shortllm's
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("removed %s in %s", plural(len(removed), "unfinished checkpoint folder"), root)
    return removed


def clear_checkpoints(root: Path) -> None:
    """Remove the checkpoints of an earlier run (``--overwrite`` without ``--resume``)."""
    for path in [path for _, path in list_checkpoints(root)] + _temps(root):
        shutil.rmtree(path, ignore_errors=True)


# ---- writing --------------------------------------------------------------------------------------------------

def check_supported(accelerator: Any) -> None:
    """Refuse checkpoints under a wrapping whose state this module cannot save without pickles.

    Raises:
        TrainingError: DeepSpeed, or FSDP version 1.
    """
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED or (kind == DistributedType.FSDP and not accelerator.is_fsdp2):
        name = "DeepSpeed" if kind == DistributedType.DEEPSPEED else "FSDP version 1"
        raise TrainingError(f"checkpoints (--save-every, --stop-after, --resume) are not supported under {name}: "
                            "its state files are pickles", "use FSDP2 (docs/accelerate/fsdp.yaml), or --save-every 0")


@contextmanager
def staged_folder(acc: Any, final: Path, tmp: Path, what: str) -> Iterator[Path]:
    """Write a folder on every process through a temporary one (collective: enter on all processes).

    The main process empties ``tmp`` before the body runs and every process waits; the body writes into it and
    (on the main process) moves it into place with :func:`publish`; every process waits again at the end. On
    any error or interrupt ``tmp`` is removed and whatever was already in place is left as it was.

    Raises:
        TrainingError: an ``OSError`` (disk full, permissions) while writing ``what`` (e.g. "the checkpoint").
    """
    try:
        if acc.is_main_process:
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        acc.wait_for_everyone()
        yield tmp
        acc.wait_for_everyone()
    except BaseException as err:
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise TrainingError(f"cannot write {what} {final}: {err.strerror or err}",
                                "free disk space or choose another --checkpoint-dir") from err
        raise


def publish(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder into place, replacing an older ``final`` (main process only)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def save_checkpoint(accelerator: Any, root: Path, step: int, state: dict[str, Any], keep: int, model: Any,
                    optimizer: Any, scheduler: Any) -> Path:
    """Save a checkpoint of every process's state (collective: call on all processes).

    Args:
        accelerator: the run's Accelerator.
        root: the checkpoint folder of the run.
        step: optimizer steps done.
        state: JSON-able run state for ``trainer_state.json`` (identity, loop state, data position).
        keep: how many of the newest checkpoints to keep.
        model, optimizer, scheduler: as prepared by accelerate (the scheduler is not prepared).

    Returns:
        The checkpoint folder. Older checkpoints beyond the newest ``keep`` are removed. On any error or
        interrupt the temporary folder is removed and the earlier checkpoints are left as they were.

    Raises:
        TrainingError: the folder cannot be written (disk full, permissions).
    """
    import torch
    from accelerate.utils import broadcast

    acc = accelerator
    pid = os.getpid()
    if acc.num_processes > 1:  # the folder is named after the main process
        pid = int(broadcast(torch.tensor([pid], device=acc.device), from_process=0).item())
    final = root / checkpoint_name(step)
    with staged_folder(acc, final, root / f".{final.name}.tmp-{pid}", "the checkpoint") as tmp:
        unwrapped = acc.unwrap_model(model)
        sharded, rank = _shard_rank(acc, unwrapped)
        if sharded or acc.is_main_process:
            write_model(tmp / _file(MODEL, rank), unwrapped)
            write_optimizer(tmp / _file(OPTIMIZER, rank), optimizer, unwrapped)
        write_rng(tmp / _file(RNG, acc.process_index))
        acc.wait_for_everyone()
        if acc.is_main_process:
            scaler = getattr(acc, "scaler", None)
            payload = {**state, "format": FORMAT, "world_size": acc.num_processes, "sharded": sharded,
                       "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None}
            (tmp / STATE_FILE).write_text(json.dumps(payload, indent=1) + "\n")
            publish(tmp, final)
            for _, old in list_checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
            log.info("checkpoint %s", final)
    return final


# ---- reading --------------------------------------------------------------------------------------------------

_STATE_FIELDS = {"identity": dict, "identity_hash": str, "step": int, "tokens": int, "wall_s": (int, float),
                 "curve": list, "eval_curve": list, "sessions": int, "world_size": int}


def read_state(path: Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of the checkpoint folder ``path``, its fields checked.

    Raises:
        TrainingError: unreadable, not JSON, or missing a field (naming the file).
    """
    file = path / STATE_FILE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise damaged(file, err.strerror or str(err)) from err
    except UnicodeDecodeError as err:
        raise damaged(file, "not valid JSON: not UTF-8 text") from err
    except json.JSONDecodeError as err:
        raise damaged(file, f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from err
    if not isinstance(state, dict):
        raise damaged(file, "not a JSON object")
    for key, kind in _STATE_FIELDS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise damaged(file, f"no valid '{key}'")
    for key in ("curve", "eval_curve"):
        if not all(isinstance(p, dict) and isinstance(p.get("step"), int) and isinstance(p.get("loss"), (int, float))
                   for p in state[key]):
            raise damaged(file, f"no valid '{key}'")
    if not isinstance(state.get("data_position", {}), dict):
        raise damaged(file, "no valid 'data_position'")
    for key in ("pace_s", "tail_s"):  # --max-time's step-time estimate (absent in other runs' checkpoints)
        value = state.get(key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and not (number and value >= 0):
            raise damaged(file, f"no valid '{key}'")
    # Well-formed is not enough: values a run cannot have would resume at a wrong position or world size.
    for key, least in (("step", 0), ("tokens", 0), ("wall_s", 0), ("sessions", 1), ("world_size", 1)):
        if state[key] < least:
            raise damaged(file, f"'{key}' is {state[key]}, below {least}")
    if path.name.startswith(PREFIX) and path.name != checkpoint_name(state["step"]):
        raise damaged(file, f"'step' is {state['step']} but the folder is {path.name}")
    return state


def latest_checkpoint(root: Path, identity: dict[str, Any], identity_hash: str) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of this run under ``root``.

    Raises:
        TrainingError: no checkpoint there; the newest one is damaged, was written in accelerate's pickle
            format, or belongs to a run with other options (naming the first option that differs).
    """
    found = list_checkpoints(root)
    if not found:
        raise TrainingError(f"--resume: no checkpoint in {root}",
                            "run without --resume to start, or point --checkpoint-dir at the run's checkpoints")
    _, path = found[-1]
    state = read_state(path)
    if state.get("identity_hash") != identity_hash:
        theirs = state.get("identity", {})
        diff = next((k for k in identity if theirs.get(k) != identity.get(k)), None)
        detail = f" ({diff}: {theirs.get(diff)!r} there, {identity.get(diff)!r} now)" if diff else ""
        raise TrainingError(f"--resume: the checkpoint {path} is from another run{detail}",
                            "resume with the same model, data and training options, or start a new run "
                            "without --resume (with --overwrite to discard the old checkpoints)")
    if state.get("format") != FORMAT:
        old = [name for name in OLD_FILES if (path / name).exists()]
        what = f"accelerate's pickle files ({', '.join(old)})" if old else "an unknown layout"
        raise TrainingError(f"--resume: the checkpoint {path} holds {what}, which shortllm does not load "
                            "(unpickling a file can run any code)",
                            "start the run again without --resume (with --overwrite)")
    return path, state


def load_checkpoint(accelerator: Any, path: Path, saved: dict[str, Any], model: Any, optimizer: Any,
                    scheduler: Any) -> None:
    """Restore the model, optimizer, scheduler, grad scaler and this process's RNG states from ``path``.

    Args:
        accelerator: the run's Accelerator.
        path: a checkpoint folder (from :func:`latest_checkpoint`), ``saved`` its ``trainer_state.json``.
        model, optimizer, scheduler: as prepared by accelerate, before any step.

    Raises:
        TrainingError: a missing, damaged or mismatched file (named), or sharded state saved on another
            number of processes.
    """
    acc = accelerator
    unwrapped = acc.unwrap_model(model)
    sharded, rank = _shard_rank(acc, unwrapped)
    state_file = path / STATE_FILE
    if bool(saved.get("sharded")) != sharded or (sharded and saved.get("world_size") != acc.num_processes):
        raise TrainingError(f"--resume: {state_file} was saved on {saved.get('world_size')} process(es) "
                            f"{'with' if saved.get('sharded') else 'without'} sharded state; this run "
                            f"{'shards' if sharded else 'does not shard'} over {acc.num_processes}",
                            "resume with the launch configuration the run was started with")
    restore_model(path / _file(MODEL, rank), unwrapped)
    restore_optimizer(path / _file(OPTIMIZER, rank), optimizer, unwrapped)
    try:
        scheduler.load_state_dict(conform(saved.get("scheduler"), scheduler.state_dict(), "scheduler"))
        scaler = getattr(acc, "scaler", None)
        if scaler is not None:
            scaler.load_state_dict(conform(saved.get("scaler"), scaler.state_dict(), "scaler"))
    except (ValueError, TypeError) as err:
        raise damaged(state_file, str(err)) from err
    rng = path / _file(RNG, acc.process_index)
    if rng.exists() or acc.process_index < int(saved.get("world_size", 1)):
        restore_rng(rng)
    else:  # more processes than the run saved: documented, only LoRA dropout streams differ
        log.warning("%s has no random state for process %d; it keeps its seeded one", path, acc.process_index)
