"""What a retrain reads, checked before any weights load: the student's manifest and the teacher it names
(``--method kd``), the output and checkpoint folders against every input, and the blocks ``--train-blocks``
names.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from shortllm.errors import ModelLoadError
from shortllm.models.loading import ModelSource, load_config, load_tokenizer, resolve_source
from shortllm.pruning.export import MANIFEST, check_no_overlap, check_output_dir, data_inputs, model_inputs
from shortllm.training.checkpoints.folders import list_checkpoints
from shortllm.training.config import TrainConfig, TrainingError

log = logging.getLogger(__name__)


def read_manifest(source: ModelSource) -> dict[str, Any] | None:
    """The ``shortllm.json`` of a local model folder (None: none, or unreadable, with a warning)."""
    path = Path(source.path) / MANIFEST
    if not source.is_local or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("cannot read %s; ignoring it", path)
        return None


def original_model(manifest: dict[str, Any] | None) -> str | None:
    """The unpruned model a folder descends from: a prune's source, or a retrain's recorded original."""
    if not manifest:
        return None
    source = manifest.get("source") or {}
    if manifest.get("verb") == "prune":
        return source.get("spec")
    return source.get("original")


def resolve_teacher(cfg: TrainConfig, source: ModelSource, manifest: dict[str, Any] | None) -> ModelSource:
    """The teacher of ``--method kd``: ``--teacher``, else the original model the student's manifest names.

    Raises:
        TrainingError: no teacher can be found or resolved.
    """
    spec, where = cfg.kd.teacher, "--teacher"
    if spec is None:
        spec = original_model(manifest)
        where = f"{Path(source.path) / MANIFEST}"
        if spec is None:
            raise TrainingError(
                f"--method kd needs a teacher, and {source.spec} has no shortllm.json naming the model it was "
                "pruned from", "pass --teacher MODEL (the unpruned model)")
    try:
        return resolve_source(spec)
    except ModelLoadError as err:
        raise TrainingError(f"the teacher '{spec}' (from {where}) cannot be found: {err.message}",
                            "pass --teacher with the unpruned model's hub id or folder") from err


def check_teacher(student_config: Any, student_tok: Any, teacher: ModelSource, trust_remote_code: bool) -> None:
    """Refuse a teacher whose vocabulary differs from the student's (KL compares them token by token).

    Raises:
        TrainingError: different vocabulary sizes or different token -> id maps.
    """
    teacher_config = load_config(teacher, trust_remote_code)
    sv, tv = student_config.get_text_config().vocab_size, teacher_config.get_text_config().vocab_size
    hint = "distill from the model the student was pruned from, or a teacher with the same tokenizer"
    if sv != tv:
        raise TrainingError(f"the teacher '{teacher.spec}' has a vocabulary of {tv} tokens, the student {sv}", hint)
    teacher_tok = load_tokenizer(teacher, trust_remote_code)
    if student_tok is not None and teacher_tok is not None and student_tok.get_vocab() != teacher_tok.get_vocab():
        raise TrainingError(f"the teacher '{teacher.spec}' uses a different tokenizer (same size, other tokens)", hint)


def retrain_inputs(cfg: TrainConfig, teacher: ModelSource | None = None) -> list[tuple[str, Any]]:
    """What a retrain reads: the model, the teacher, training and held-out data (and its checkpoints)."""
    found = model_inputs("input model", cfg.model) + model_inputs("teacher", teacher.ref if teacher else
                                                                  cfg.kd.teacher)
    found += data_inputs("training data", cfg.data.data, cfg.data.data_dir)
    found += data_inputs("held-out data", cfg.data.eval_data)
    return found


def check_outputs(cfg: TrainConfig) -> None:
    """Refuse an ``--out`` or checkpoint folder that overlaps an input, a checkpoint path that is a file, and a
    checkpoint folder holding an earlier run's checkpoints without ``--resume`` or ``--overwrite``.

    Raises:
        OutputError, TrainingError: any of these.
    """
    root = cfg.checkpoints_path()
    # The checkpoints are read back by --resume and must survive the final write of --out.
    check_output_dir(cfg.out, cfg.overwrite, retrain_inputs(cfg) + [("checkpoint folder", root)])
    check_no_overlap(root, retrain_inputs(cfg), what="checkpoint folder")
    if root.exists() and not root.is_dir():
        raise TrainingError(f"checkpoint path {root} is a file", "choose another --checkpoint-dir")
    if not cfg.resume and list_checkpoints(root) and not cfg.overwrite:
        raise TrainingError(f"{root} holds checkpoints of an earlier run",
                            "pass --resume to continue it, or --overwrite to start over")


def trained_blocks(cfg: TrainConfig, config: Any) -> list[int] | None:
    """The blocks ``--train-blocks`` names (``[]`` for ``--train-head`` alone; None: no partial training).

    Raises:
        TrainingError: as :func:`shortllm.training.freeze.resolve_blocks`.
    """
    if cfg.train_blocks is None:
        return [] if cfg.train_head else None
    from shortllm.models.arch import num_layers
    from shortllm.training.freeze import resolve_blocks

    return resolve_blocks(cfg.train_blocks, config, num_layers(config))
