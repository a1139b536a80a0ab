"""The retrain job: check everything cheap first, load, train, then write the healed model atomically.

Order matters for "nothing half-written": options, output folder, data and teacher are checked before any
weights load or any checkpoint is written; the final folder appears only when it is complete; only the main
process writes.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass, replace
from typing import Any

from shortllm.errors import DataError, Interrupted, ShortLLMError
from shortllm.models.loading import ModelSource, check_settings, load_config, load_model, resolve_source
from shortllm.pruning.export import check_no_overlap
from shortllm.training.accelerator import make_accelerator
from shortllm.training.checkpoints.best import clear_best, forget_after, restore_best
from shortllm.training.checkpoints.folders import (
    check_supported,
    checkpoint_name,
    clear_checkpoints,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temps,
)
from shortllm.training.config import TrainConfig, TrainingError, identity_hash, run_identity, validate
from shortllm.training.data.batches import plan_steps
from shortllm.training.data.rows import load_train_data
from shortllm.training.inputs import (check_outputs, check_teacher, read_manifest, resolve_teacher, retrain_inputs,
                                      trained_blocks)
from shortllm.training.loop import LoopState, build_trainer, evaluate, train
from shortllm.training.objectives.losses import objective_name
from shortllm.training.output import RetrainResult, save_final
from shortllm.wording import duration, plural

log = logging.getLogger(__name__)


def release_freed_memory() -> None:
    """Linux/glibc, opt-in: serve allocations of N MiB or more with ``mmap`` when ``SHORTLLM_MMAP_THRESHOLD_MB=N``.

    glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), after which
    activations, gradients and logit chunks of a few MiB come from the heap and stay in the process's resident
    memory once freed. A fixed threshold (``mallopt(M_MMAP_THRESHOLD, N MiB)``) hands them back to the OS at
    ``free``, at the cost of a page fault per page on every allocation. Measured (kd, the embedded model pruned
    by 20%, batch 4 x 128, 6 steps; ``benchmarks/malloc_tradeoff.py``): glibc's default 78 tokens/s at 3,980
    MiB peak RSS, 8 MiB 59 tokens/s at 3,445 MiB, 1 MiB 50 tokens/s at 3,204 MiB. Speed is the default; a
    memory-bound run sets the variable. No-op elsewhere, or when the variable is unset or not a positive integer.
    """
    import ctypes
    import os
    import sys

    value = os.environ.get("SHORTLLM_MMAP_THRESHOLD_MB", "")
    if not sys.platform.startswith("linux") or not value.isdigit() or int(value) <= 0:
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, int(value) << 20)  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        pass


def _peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (Linux/macOS; None elsewhere)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)
    except (ImportError, OSError):
        return None


def _reset_accelerate(accelerator: Any) -> None:
    """Let a later run in this Python process build a fresh Accelerator (tests, notebooks, benchmarks)."""
    from accelerate.state import AcceleratorState, GradientState

    if accelerator.num_processes > 1:
        accelerator.end_training()
        return
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def resume_command(cfg: TrainConfig) -> str:
    """The command line that continues this run from its newest checkpoint (``cfg.command`` + ``--resume``)."""
    try:
        given = "--resume" in shlex.split(cfg.command)
    except ValueError:
        given = False
    return cfg.command if given else f"{cfg.command} --resume"


def _step_of(cfg: TrainConfig, state: LoopState, total_steps: int) -> str:
    """``12 of 100``, or for a ``--max-time`` run ``12 (at most 100000), 4m10s of the 10m00s spent``."""
    if cfg.max_time is None:
        return f"{state.step} of {total_steps}"
    return (f"{state.step} (at most {total_steps}), {duration(state.wall_s)} of the {duration(cfg.max_time)} "
            "--max-time spent")


@dataclass
class _Session:
    """What an interrupt message needs to know: may the checkpoints found be reported, and where training is."""

    checkpoints_ours: bool  # False while the checkpoint folder still holds an earlier run's (--overwrite)
    state: LoopState | None = None
    total_steps: int | None = None


def _interrupted(cfg: TrainConfig, session: _Session) -> Interrupted:
    """The true one-line account of an interrupted run: the checkpoint kept and how to continue, or nothing."""
    at = ""
    if session.state is not None and session.total_steps is not None:
        at = f"stopped at step {_step_of(cfg, session.state, session.total_steps)}; "
    found = list_checkpoints(cfg.checkpoints_path()) if session.checkpoints_ours else []
    if not found:
        return Interrupted(f"{at}nothing was written")
    step, path = found[-1]
    return Interrupted(f"{at}kept the checkpoint {path} (step {step}), nothing was written to {cfg.out}",
                       f"to continue, run `{resume_command(cfg)}`")


def retrain(cfg: TrainConfig, on_step=None) -> RetrainResult:
    """Heal a model with LoRA, continued pretraining or distillation (see docs/retrain.md).

    Args:
        cfg: the options.
        on_step: ``(step, total, stats)`` after each optimizer step, on the main process only.

    Returns:
        The :class:`RetrainResult` (on every process; only the main one has written anything).

    Raises:
        ShortLLMError: bad options, data, teacher, output folder or checkpoint; a diverged run.
        Interrupted: Ctrl-C (or SIGTERM, where the caller turns it into KeyboardInterrupt); the message names
            the checkpoint kept and the command that resumes it, or says that nothing was written.
    """
    t0 = time.perf_counter()
    validate(cfg)
    check_settings(cfg.settings)
    check_outputs(cfg)
    source = resolve_source(cfg.model, cfg.settings.revision)
    config = load_config(source, cfg.settings.trust_remote_code)
    manifest = read_manifest(source)
    teacher_source = resolve_teacher(cfg, source, manifest) if cfg.method == "kd" else None
    if teacher_source is not None:  # a teacher named by the student's manifest is known only now
        check_no_overlap(cfg.out, retrain_inputs(cfg, teacher_source))
        check_no_overlap(cfg.checkpoints_path(), retrain_inputs(cfg, teacher_source), what="checkpoint folder")
    from shortllm.data.context import check_training_context

    check_training_context(config, source.spec, cfg.seq_len, teacher_source, cfg.settings.trust_remote_code)
    trained_blocks(cfg, config)  # a bad --train-blocks is refused before any weights load

    session = _Session(checkpoints_ours=cfg.resume or not list_checkpoints(cfg.checkpoints_path()))
    try:
        accelerator = make_accelerator(cfg)
        try:
            return _run(cfg, accelerator, source, config, manifest, teacher_source, t0, on_step, session)
        finally:
            _reset_accelerate(accelerator)
    except KeyboardInterrupt:
        raise _interrupted(cfg, session) from None


def _run(cfg: TrainConfig, accelerator: Any, source: ModelSource, config: Any, manifest: dict[str, Any] | None,
         teacher_source: ModelSource | None, t0: float, on_step, session: _Session) -> RetrainResult:
    from accelerate.utils import set_seed

    timings: dict[str, float] = {}
    release_freed_memory()
    if cfg.save_every or cfg.stop_after or cfg.resume:
        check_supported(accelerator)
    if accelerator.is_main_process:
        remove_stale_temps(cfg.checkpoints_path())
    set_seed(cfg.seed)
    load_settings = replace(cfg.settings, device="cpu", device_map=None)  # accelerate places the model
    loaded = load_model(cfg.model, load_settings)
    if teacher_source is not None:
        check_teacher(config, loaded.tokenizer, teacher_source, cfg.settings.trust_remote_code)
    log.info("Reading and tokenizing the training data %s", cfg.data.data, extra={"phase": True})
    world = accelerator.num_processes
    global_batch = cfg.batch_size * cfg.grad_accum * world
    planned = (cfg.max_steps * global_batch if cfg.max_steps else
               -(-cfg.max_tokens // cfg.seq_len) if cfg.max_tokens else None)  # rows the steps read, if known
    data = load_train_data(loaded.tokenizer, cfg.data, cfg.seq_len, planned)
    if cfg.keep_best and len(data.eval) == 0:
        raise TrainingError("--keep-best chooses by held-out loss, and this run holds out no rows",
                            "give --eval-data, or an --eval-fraction above 0")
    if data.streaming:  # too little text for one step shows when step 0 reads its batch
        total_steps = plan_steps(0, global_batch, cfg.seq_len, cfg.max_steps, cfg.max_tokens)
    else:
        if len(data.train) < global_batch:
            raise DataError(
                f"{cfg.data.data} gives {plural(len(data.train), 'training row')} of at most {cfg.seq_len} tokens, "
                f"but one optimizer step needs {global_batch} (--batch-size {cfg.batch_size} x --grad-accum "
                f"{cfg.grad_accum} x {plural(world, 'process', 'processes')})",
                "use more text, a shorter --seq-len, or a smaller batch")
        mean_row = data.train.num_tokens / len(data.train)
        total_steps = plan_steps(len(data.train), global_batch, mean_row, cfg.max_steps, cfg.max_tokens)
    identity = run_identity(cfg, loaded.fingerprint, data.fingerprint, total_steps, global_batch)
    if cfg.kd.teacher is None and teacher_source is not None:
        identity["kd"] = {**identity["kd"], "teacher": teacher_source.ref}
    ident_hash = identity_hash(identity)
    checkpoint = latest_checkpoint(cfg.checkpoints_path(), identity, ident_hash) if cfg.resume else None
    timings["load"] = time.perf_counter() - t0

    model = loaded.model
    if cfg.method == "lora":
        from shortllm.training.lora import apply_lora

        model = apply_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets)
    teacher = None
    if teacher_source is not None:  # in --teacher-dtype when given (build_trainer widens it per module), but a
        # teacher correction trains in --dtype (and build_trainer narrows it afterwards)
        dtype = cfg.kd.teacher_dtype if cfg.kd.teacher_dtype and not cfg.kd.teacher_warmup_steps else None
        teacher = load_model(teacher_source.ref, replace(load_settings, dtype=dtype or load_settings.dtype)).model
    partial = None
    if cfg.train_blocks is not None or cfg.train_head:
        from shortllm.training.freeze import freeze_except

        partial = freeze_except(model, trained_blocks(cfg, model.config), cfg.train_head)
        log.info("training %s of %s parameters (blocks %s%s); the rest is frozen", f"{partial['trainable_params']:,}",
                 f"{partial['trainable_params'] + partial['frozen_params']:,}", partial["blocks"],
                 " and the head" if cfg.train_head else "")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = sum(p.numel() for p in model.parameters())
    pad_id = loaded.tokenizer.pad_token_id
    pad_id = pad_id if pad_id is not None else (loaded.tokenizer.eos_token_id or 0)
    tr = build_trainer(cfg, accelerator, model, teacher, data, total_steps, pad_id, identity, ident_hash)

    state = LoopState()
    if checkpoint is not None:
        path, saved = checkpoint
        load_checkpoint(accelerator, path, saved, tr.model, tr.optimizer, tr.scheduler)
        fields = {k: saved[k] for k in ("step", "tokens", "wall_s", "curve", "eval_curve", "sessions")}
        fields.update({k: saved[k] for k in ("pace_s", "tail_s") if k in saved})  # --max-time's estimate
        state = LoopState(**fields)
        state.sessions += 1
        if cfg.keep_best:  # the best so far survives the resume; bests written after the checkpoint are replayed
            state.best = forget_after(cfg.checkpoints_path(), state.step, saved.get("best"),
                                      remove=accelerator.is_main_process)
            tr.checkpointed_best = state.best["step"] if state.best else None
        try:
            tr.batches.seek(state.step, saved.get("data_position"))
        except (KeyError, TypeError, ValueError) as err:
            raise TrainingError(f"--resume: the checkpoint file {path / 'trainer_state.json'} has no valid "
                                f"data_position ({err})", "start over without --resume (with --overwrite)") from err
        log.info("resumed from %s (step %s)", path, _step_of(cfg, state, total_steps))
    else:
        if cfg.overwrite and accelerator.is_main_process:
            clear_checkpoints(cfg.checkpoints_path())
        if accelerator.is_main_process:
            clear_best(cfg.checkpoints_path())  # an earlier run's: this run's bests are written from step 1
        session.checkpoints_ours = True
        log.info("Held-out loss before training (%s)", plural(len(data.eval), "row"), extra={"phase": True})
        initial = evaluate(tr, data.eval)
        if initial is not None:
            state.eval_curve.append({"step": 0, "loss": initial, "tokens": 0})
    session.state, session.total_steps = state, total_steps
    t1 = time.perf_counter()
    ended = train(tr, state, on_step)  # "steps" | "time" | None (this session stopped early)
    finished = ended is not None
    timings["train"] = time.perf_counter() - t1

    result = RetrainResult(
        method=cfg.method, model=source.spec, finished=finished, steps=state.step, total_steps=total_steps,
        tokens_seen=state.tokens, wall_time_s=round(state.wall_s, 3),
        final_loss=state.curve[-1]["loss"] if state.curve else None,
        final_ce=state.curve[-1].get("ce") if state.curve else None,
        objective=objective_name(tr.teacher is not None, cfg.kd.alpha,
                                 cfg.kd.hidden_weight if cfg.kd.hidden else 0.0),
        initial_eval_loss=next((p["loss"] for p in state.eval_curve if p["step"] == 0), None),
        final_eval_loss=state.eval_curve[-1]["loss"] if state.eval_curve else None,
        teacher=teacher_source.ref if teacher_source else None, trainable_params=trainable, params=params,
        world_size=world, global_batch=global_batch, warmup_steps=tr.warmup_steps, data=data.info,
        max_time_s=cfg.max_time, time_up=ended == "time",
        resumed_from=str(checkpoint[0]) if checkpoint else None, is_main=accelerator.is_main_process,
        best=state.best, partial=partial,
        loss_path="teacher support" if tr.losses.support else "chunked head" if tr.losses.chunked else "full logits",
        teacher_shared_blocks=tr.losses.shared,
        peak_rss_mb=_peak_rss_mb(),
        loss_curve=state.curve, eval_curve=state.eval_curve, timings=timings,
    )
    if not finished:
        result.checkpoint = str(cfg.checkpoints_path() / checkpoint_name(state.step))
        return result
    if state.best is not None:  # --keep-best: --out gets the weights of the lowest held-out loss
        restore_best(accelerator, cfg.checkpoints_path(), state.best, tr.model)
    save_final(cfg, tr, loaded, source, manifest, result, t0)
    return result


__all__ = ["RetrainResult", "ShortLLMError", "TrainConfig", "retrain"]
