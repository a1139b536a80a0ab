"""Resumable checkpoints: ``accelerator.save_state`` into a temporary folder, renamed when complete.

A checkpoint folder ``step-0000120/`` holds what accelerate saves (model, optimizer, registered scheduler,
every process's RNG states) plus ``trainer_state.json``: the run identity, the step (which is also the data
position in memory: see :mod:`shortllm.training.batches`; a stream's position is saved as ``data_position``),
tokens seen, wall time and the curves so far.
A folder without ``trainer_state.json`` is incomplete and ignored; only complete folders have that name.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from shortllm.training.config import TrainingError

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
PREFIX = "step-"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:07d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith(PREFIX) and (path / STATE_FILE).is_file():
            try:
                found.append((int(path.name[len(PREFIX):]), path))
            except ValueError:
                continue
    return sorted(found)


def save_checkpoint(accelerator: Any, root: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Save a checkpoint of every process's state (collective: call on all processes).

    Returns:
        The checkpoint folder. Older checkpoints beyond the newest ``keep`` are removed.
    """
    final = root / checkpoint_name(step)
    tmp = root / f".{final.name}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    # Tied embeddings are saved once; accelerate warns about it on every save, and reloads them tied.
    quiet = logging.getLogger("accelerate.utils.other")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
    finally:
        quiet.setLevel(level)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())


def latest_checkpoint(root: Path, identity: dict[str, Any], identity_hash: str) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of this run under ``root``.

    Raises:
        TrainingError: no checkpoint there, or the newest one belongs to a run with other options
            (naming the first option that differs).
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
    return path, state


def clear_checkpoints(root: Path) -> None:
    """Remove the checkpoints of an earlier run (``--overwrite`` without ``--resume``)."""
    for _, path in list_checkpoints(root):
        shutil.rmtree(path, ignore_errors=True)
    if root.is_dir():
        for stale in root.glob(f".{PREFIX}*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
