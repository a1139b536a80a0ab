"""``retrain --keep-best``: keep the weights of the step with the lowest held-out loss, across resumes.

The reference of Shortened LLaMA (LLM-Pruner's ``post_training.py``: Hugging Face ``Trainer`` with
``load_best_model_at_end=True``, ``metric_for_best_model`` = eval loss) evaluates every ``eval_steps`` and ends on
the checkpoint with the lowest held-out loss. Here every held-out evaluation after a training step is a candidate
(the untrained model at step 0 is not, as in the reference). A new best writes the trained tensors (the adapter
for lora, every parameter for cpt/kd: :func:`shortllm.training.checkpoints.state.write_model`, safetensors with a digest)
into ``<checkpoints>/best-NNNNNNN/`` beside the step checkpoints; its record ``{"step", "eval_loss"}`` travels
in the loop state, so every step checkpoint names the best folder that was current when it was written.

A resumed run continues from a step checkpoint: a best folder written after it (by the interrupted session)
belongs to steps that are about to be replayed and is removed; the one the checkpoint names is kept. At any
time at most two best folders exist: the current best and the one the newest step checkpoint names.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from shortllm.training.checkpoints.folders import numbered_folders, publish, staged_folder
from shortllm.training.config import TrainingError
from shortllm.training.checkpoints.state import is_sharded, restore_model, write_model

log = logging.getLogger(__name__)

PREFIX = "best-"
RECORD = "best.json"


def best_name(step: int) -> str:
    """The folder name of the best weights after ``step`` optimizer steps."""
    return f"{PREFIX}{step:07d}"


def list_best(root: Path) -> list[tuple[int, Path]]:
    """Complete best folders under ``root`` as ``(step, folder)``, oldest first."""
    return numbered_folders(root, PREFIX, RECORD)


def clear_best(root: Path) -> None:
    """Remove every best folder (and unfinished ones) under ``root``: a fresh run starts without them."""
    if root.is_dir():
        for path in root.glob(f"{PREFIX}*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in root.glob(f".{PREFIX}*"):
            shutil.rmtree(path, ignore_errors=True)


def _model_file(folder: Path, model: Any, rank: int) -> Path:
    return folder / (f"model-rank{rank:05d}.safetensors" if is_sharded(model) else "model.safetensors")


def save_best(accelerator: Any, root: Path, step: int, eval_loss: float, model: Any,
              keep_step: int | None) -> dict[str, Any]:
    """Write the trained tensors of ``model`` as the new best (collective: call on every process).

    Args:
        accelerator: the run's Accelerator.
        root: the run's checkpoint folder.
        step: optimizer steps done; ``eval_loss`` the held-out token-mean cross-entropy (nats) there.
        model: as prepared by accelerate.
        keep_step: the best step the newest step checkpoint names (its folder is kept for a resume), or None.

    Returns:
        The new record ``{"step", "eval_loss"}``.

    Raises:
        TrainingError: the folder cannot be written (disk full, permissions).
    """
    acc = accelerator
    unwrapped = acc.unwrap_model(model)
    final = root / best_name(step)
    record = {"step": step, "eval_loss": eval_loss}
    # one temporary name on every process (one run writes a checkpoint folder)
    with staged_folder(acc, final, root / f".{final.name}.tmp", "the best weights") as tmp:
        if is_sharded(unwrapped) or acc.is_main_process:
            write_model(_model_file(tmp, unwrapped, acc.process_index), unwrapped)
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / RECORD).write_text(json.dumps(record) + "\n")
            publish(tmp, final)
            for old_step, old in list_best(root):
                if old_step not in (step, keep_step):
                    shutil.rmtree(old, ignore_errors=True)
            log.info("new best held-out loss %.4f at step %d: %s", eval_loss, step, final)
    return record


def forget_after(root: Path, step: int, record: Any, remove: bool = True) -> dict[str, Any] | None:
    """On resume from the checkpoint at ``step`` naming ``record``: check it, remove the best folders of later steps.

    Args:
        root: the run's checkpoint folder.
        step: the step of the checkpoint resumed from; ``record`` its ``best`` entry (None: no best yet).
        remove: whether this process removes (the main one).

    Returns:
        The record, checked.

    Raises:
        TrainingError: the record is malformed, or the best folder it names is missing (removed by hand).
    """
    if record is None:
        found = None
    elif (not isinstance(record, dict) or not isinstance(record.get("step"), int)
          or not isinstance(record.get("eval_loss"), (int, float)) or record["step"] > step):
        raise TrainingError(f"--resume: the checkpoint at step {step} in {root} has no valid 'best' record",
                            "start over without --resume (with --overwrite)")
    else:
        found = root / best_name(record["step"])
    if remove:
        for best_step, path in list_best(root):
            if best_step > step:
                shutil.rmtree(path, ignore_errors=True)
    if found is not None and not (found / RECORD).is_file():
        raise TrainingError(f"--resume: the checkpoint names the best weights {found}, which are missing",
                            "start over without --resume (with --overwrite)")
    return record


def restore_best(accelerator: Any, root: Path, record: dict[str, Any], model: Any) -> None:
    """Copy the best weights named by ``record`` into ``model`` (prepared; every process loads its part).

    Raises:
        TrainingError: the folder or a file of it is missing or damaged, or does not fit the model.
    """
    unwrapped = accelerator.unwrap_model(model)
    folder = root / best_name(record["step"])
    restore_model(_model_file(folder, unwrapped, accelerator.process_index), unwrapped)
    log.info("kept the best weights: step %d, held-out loss %.4f", record["step"], record["eval_loss"])
