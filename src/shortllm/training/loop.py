"""The one training loop behind lora, cpt and kd, on accelerate.

accelerate does the device placement, mixed precision, gradient accumulation (``accumulate``/``backward``) and
DDP/FSDP/DeepSpeed wrapping; checkpoints are shortllm's own (:mod:`shortllm.training.checkpoints.folders`: safetensors
and JSON, never pickles). This module adds what is specific to healing: the token-exact loss normalisation
across micro-batches and processes, the optional teacher, held-out evaluation, the NaN/inf guard and the curves
recorded in the manifest.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from shortllm.training.checkpoints.best import save_best
from shortllm.training.checkpoints.folders import list_checkpoints, save_checkpoint
from shortllm.training.config import TrainConfig, TrainingError
from shortllm.training.data.batches import MemoryBatches, StreamBatches, collate, make_batches, micro_slice
from shortllm.training.data.rows import IGNORE, Rows, TrainData
from shortllm.training.objectives.forward import LossSetup, loss_setup, micro_losses
from shortllm.training.objectives.losses import kd_objective
from shortllm.optim import adamw, param_groups
from shortllm.training.schedule import WARMUP_SHARE, make_schedule, run_progress, step_pace, time_is_up
from shortllm.training.step_in_backward import StepInBackward, check_step_in_backward

log = logging.getLogger(__name__)

_clock = time.perf_counter  # the loop's clock (tests of --max-time replace it with a simulated one)

# (step, total steps, stats): stats is the step's curve point (loss, ce, [kl], lr, tokens, grad_norm, [eval_loss])
# plus tokens_per_s, and session_steps / session_s: steps done and seconds spent in this session so far,
# and with --max-time time_left_s: the training seconds left of the budget.
StepCallback = Callable[[int, int, dict[str, Any]], None]


@dataclass
class LoopState:
    """Counters and curves; saved in every checkpoint and in the final manifest."""

    step: int = 0
    tokens: int = 0  # input tokens (padding excluded) the optimizer has seen, over all processes
    wall_s: float = 0.0  # training time over all sessions (evals and checkpoints in it; loading excluded)
    curve: list[dict[str, float]] = field(default_factory=list)
    eval_curve: list[dict[str, float]] = field(default_factory=list)
    sessions: int = 1
    pace_s: float | None = None  # --max-time: seconds per step when last measured (resumes its estimate)
    tail_s: float = 0.0  # --max-time: seconds from the step's clock reading to its end, when last measured
    best: dict[str, Any] | None = None  # --keep-best: {"step", "eval_loss"} of the weights kept (training/checkpoints/best.py)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trainer:
    """Everything the loop runs on, built by :func:`build_trainer`."""

    cfg: TrainConfig
    accelerator: Any
    model: Any  # prepared (possibly wrapped) student
    optimizer: Any
    scheduler: Any
    teacher: Any | None
    data: TrainData
    batches: MemoryBatches | StreamBatches
    total_steps: int  # planned; with --max-time an upper bound
    warmup_steps: int | None  # None: --max-time without --warmup-steps (the first 5% of the progress)
    pad_id: int
    checkpoint_root: Path
    identity: dict[str, Any]
    identity_hash: str
    checkpointed_best: int | None = None  # --keep-best: the best step the newest step checkpoint names
    losses: LossSetup = field(default_factory=LossSetup)  # chunked head or full logits; --kd-hidden taps
    in_backward: StepInBackward | None = None  # --optimizer-in-backward


def build_trainer(cfg: TrainConfig, accelerator: Any, model: Any, teacher: Any | None, data: TrainData,
                  total_steps: int, pad_id: int, identity: dict[str, Any], identity_hash: str) -> Trainer:
    """Optimizer (AdamW), warmup + cosine schedule, accelerate preparation, teacher placement and storage.

    Raises:
        TrainingError: ``--optimizer-in-backward`` where it cannot run (:func:`check_step_in_backward`).
    """
    if cfg.optimizer_in_backward:
        check_step_in_backward(accelerator)
    if cfg.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.train()
    optimizer = adamw(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    if cfg.max_time is not None:  # None: the warm-up is the first 5% of the progress
        warmup = cfg.warmup_steps
    else:
        warmup = min(cfg.warmup_steps if cfg.warmup_steps is not None else round(WARMUP_SHARE * total_steps),
                     total_steps)
    scheduler = make_schedule(optimizer, cfg.lr_schedule, total_steps, warmup, cfg.min_lr_ratio,
                              by_time=cfg.max_time is not None)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Not prepared: a prepared scheduler steps once per process per step, for dataloaders that shrink with
    # the number of processes; here the step count is already global. Checkpoints save it themselves.
    if teacher is not None:
        teacher.to(accelerator.device).eval().requires_grad_(False)
    if teacher is not None and cfg.kd.teacher_warmup_steps:  # Minitron's teacher correction (training/objectives/teacher.py)
        from shortllm.training.objectives.teacher import warm_up_teacher

        warm_up_teacher(teacher, data, cfg.kd.teacher_warmup_steps, cfg.lr, cfg.batch_size, cfg.seed, pad_id,
                        accelerator.device, accelerator.autocast, cfg.max_grad_norm)
    if teacher is not None:
        from shortllm.training.objectives.teacher import store_teacher

        store_teacher(teacher, cfg.kd.teacher_dtype, next(model.parameters()).dtype)
    in_backward = None
    if cfg.optimizer_in_backward:
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper steps only at sync points
        in_backward = StepInBackward(inner, [p for p in model.parameters() if p.requires_grad])
    batches = make_batches(data, cfg.seed, cfg.batch_size, cfg.grad_accum, accelerator.num_processes)
    losses = loss_setup(accelerator, model, teacher, cfg.kd.temperature, cfg.kd.hidden, cfg.gradient_checkpointing,
                        cfg.kd.support_pair())
    return Trainer(cfg, accelerator, model, optimizer, scheduler, teacher, data, batches, total_steps, warmup,
                   pad_id, cfg.checkpoints_path(), identity, identity_hash, losses=losses, in_backward=in_backward)


def _forward(tr: Trainer, batch: dict[str, Any], with_teacher: bool, with_hidden: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(CE sum, KL sum or 0, hidden-state loss sum or 0, predicted-token count) of one micro-batch."""
    return micro_losses(tr.model, tr.teacher, tr.losses, batch, tr.accelerator.autocast, with_teacher, with_hidden)


def _to(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) for k, v in batch.items()}


def evaluate(tr: Trainer, rows: Rows) -> float | None:
    """Token-mean cross-entropy of the student on ``rows``, sharded over processes.

    Every process runs the same number of forward passes (a process short of rows repeats one with all
    labels ignored), so wrapped models with collectives in their forward (FSDP, ZeRO-3) stay in step.
    """
    if len(rows) == 0:
        return None
    acc = tr.accelerator
    world, rank, b = acc.num_processes, acc.process_index, tr.cfg.batch_size
    mine = list(range(rank, len(rows), world))
    n_batches = math.ceil(math.ceil(len(rows) / world) / b)
    totals = torch.zeros(2, dtype=torch.float64, device=acc.device)
    tr.model.eval()
    with torch.no_grad():
        for k in range(n_batches):
            idx = mine[k * b:(k + 1) * b]
            batch = collate(rows, idx or [0], tr.pad_id)
            if not idx:
                batch["labels"].fill_(IGNORE)
            ce, _, _, count = _forward(tr, _to(batch, acc.device), with_teacher=False)
            totals += torch.stack([ce.double(), count.double()])
    tr.model.train()
    totals = acc.reduce(totals, "sum")
    return float(totals[0] / totals[1]) if totals[1] > 0 else None


def _diverged(tr: Trainer, step: int, what: str) -> TrainingError:
    found = list_checkpoints(tr.checkpoint_root)
    kept = (f"the last good checkpoint is {found[-1][1]} (step {found[-1][0]}); continue from it with --resume"
            if found else "no checkpoint was written before it")
    warmup = "raise --warmup-steps, " if tr.cfg.max_time is None else "give --warmup-steps, "
    return TrainingError(f"training stopped: {what} at step {step + 1}; {kept}",
                         f"lower --lr, {warmup}or use --mixed-precision no; nothing was written to --out")


def _checkpoint(tr: Trainer, state: LoopState) -> None:
    payload = {"identity": tr.identity, "identity_hash": tr.identity_hash, "world_size": tr.accelerator.num_processes,
               "data_position": tr.batches.position(), **state.as_dict()}
    save_checkpoint(tr.accelerator, tr.checkpoint_root, state.step, payload, tr.cfg.keep_checkpoints, tr.model,
                    tr.optimizer, tr.scheduler)
    tr.checkpointed_best = state.best["step"] if state.best else None


def train(tr: Trainer, state: LoopState, on_step: StepCallback | None = None) -> str | None:
    """Run optimizer steps from ``state.step`` to the end (or to ``stop_after`` steps in this session).

    The end is ``tr.total_steps``, or with ``--max-time`` the step after which the next one would end past the
    time limit (:func:`~shortllm.training.schedule.time_is_up`), whichever comes first. Every process decides
    by the main process's clock, which travels with the step's loss sums, so all stop at the same step.

    Each step's loss is the token mean over the whole global batch: micro-batch sums are scaled by
    ``grad_accum * processes / predicted tokens of the global batch``, which accelerate's accumulation
    scaling and DDP's gradient averaging turn back into exactly that mean.

    Returns:
        "steps" or "time" when the run is done (its steps, or its --max-time), None when the session stopped
        early (checkpoint written).

    Raises:
        TrainingError: the loss or gradient norm became NaN/inf (nothing is stepped with it, except under
            ``--optimizer-in-backward``, where the updates are made before the norm is known).
    """
    cfg, acc, data = tr.cfg, tr.accelerator, tr.data
    world, rank = acc.num_processes, acc.process_index
    stop_at = tr.total_steps if cfg.stop_after is None else min(tr.total_steps, state.step + cfg.stop_after)
    with_teacher = tr.teacher is not None and cfg.kd.alpha > 0
    alpha = cfg.kd.alpha if tr.teacher is not None else 0.0
    hidden_w = cfg.kd.hidden_weight if tr.teacher is not None and cfg.kd.hidden else 0.0
    session_tokens, t0 = 0, _clock()
    session_start = state.step
    wall_before = state.wall_s
    limit = cfg.max_time
    time_up, first_step_s = False, None  # --max-time: whether it ended the run; the session's first reading
    cuda = acc.device.type == "cuda"
    tr.model.train()
    log.info("Training", extra={"phase": True})  # the CLI's progress display counts the steps in this phase
    while state.step < stop_at and not time_up:
        step = state.step
        rows = tr.batches.step(step)
        n_targets, n_inputs = sum(rows.targets), rows.num_tokens
        scale = cfg.grad_accum * world / max(n_targets, 1)
        # ce, kl and hidden sums; the main process's clock reading and last update time (--max-time)
        sums = torch.zeros(5, dtype=torch.float64, device=acc.device)
        grad_norm = None
        lr = tr.scheduler.get_last_lr()[0]
        for micro in range(cfg.grad_accum):
            mine = list(range(len(rows)))[micro_slice(micro, rank, cfg.batch_size, world)]
            batch = _to(collate(rows, mine, tr.pad_id), acc.device)
            with acc.accumulate(tr.model):
                ce, kl, hid, _ = _forward(tr, batch, with_teacher, hidden_w > 0)
                loss = kd_objective(ce, kl, alpha, hid, hidden_w) if tr.teacher is not None else ce
                acc.backward(loss * scale)
                sums[:3] += torch.stack([ce.detach().double(), kl.detach().double(), hid.detach().double()])
                if acc.sync_gradients:
                    grad_norm = (tr.in_backward.norm() if tr.in_backward else
                                 acc.clip_grad_norm_(tr.model.parameters(), cfg.max_grad_norm))
        if acc.is_main_process and limit is not None:  # --max-time: every process decides by these two
            if cuda:
                torch.cuda.synchronize()  # the backward has run, not only been queued
            sums[3] = reading = _clock() - t0
            sums[4] = state.tail_s
        sums = acc.reduce(sums, "sum")
        ce_mean, kl_mean, hid_mean = (float(x) / max(n_targets, 1) for x in sums[:3])
        objective = kd_objective(ce_mean, kl_mean, alpha, hid_mean, hidden_w) if tr.teacher is not None else ce_mean
        norm = float(grad_norm) if grad_norm is not None else float("nan")
        if not math.isfinite(objective) or (grad_norm is not None and not math.isfinite(norm)):
            tr.optimizer.zero_grad(set_to_none=True)
            what = f"the loss is {objective}" if not math.isfinite(objective) else f"the gradient norm is {norm}"
            raise _diverged(tr, step, what)
        if tr.in_backward is None:  # else every parameter was updated during the backward
            tr.optimizer.step()
        state.step += 1
        if limit is not None:
            session_s, tail = float(sums[3]), float(sums[4])  # the same numbers on every process
            first_step_s = session_s if first_step_s is None else first_step_s
            state.pace_s = step_pace(session_s, first_step_s, state.step - session_start, state.pace_s)
            time_up = time_is_up(wall_before + session_s, state.pace_s, tail, limit)
            progress = run_progress(state.step, tr.total_steps, wall_before + session_s, limit)
            tr.scheduler.advance(progress, state.step)
        else:
            tr.scheduler.step()
        tr.optimizer.zero_grad(set_to_none=True)
        state.tokens += n_inputs
        session_tokens += n_inputs
        elapsed = _clock() - t0
        state.wall_s = wall_before + elapsed
        if limit is not None:  # read on the main process only; the next step's sums carry it to the others
            state.tail_s = elapsed - reading if acc.is_main_process else 0.0
        point = {"step": state.step, "loss": objective, "ce": ce_mean, "lr": lr, "tokens": state.tokens,
                 "grad_norm": norm}
        if tr.teacher is not None:
            point["kl"] = kl_mean
        if hidden_w:
            point["hidden"] = hid_mean
        state.curve.append(point)
        last = state.step == tr.total_steps or time_up
        if (cfg.eval_every and state.step % cfg.eval_every == 0) or last:
            eval_loss = evaluate(tr, data.eval)
            if eval_loss is not None:
                state.eval_curve.append({"step": state.step, "loss": eval_loss, "tokens": state.tokens})
                point["eval_loss"] = eval_loss
                if cfg.keep_best and (state.best is None or eval_loss < state.best["eval_loss"]):
                    state.best = save_best(acc, tr.checkpoint_root, state.step, eval_loss, tr.model,
                                           tr.checkpointed_best)
        if on_step is not None and acc.is_main_process:
            stats = {**point, "tokens_per_s": session_tokens / max(elapsed, 1e-9),
                     "session_steps": state.step - session_start, "session_s": elapsed}
            if limit is not None:
                stats["time_left_s"] = max(0.0, limit - state.wall_s)
            on_step(state.step, tr.total_steps, stats)
        early_stop = state.step == stop_at and not last
        if not last and ((cfg.save_every and state.step % cfg.save_every == 0) or early_stop):
            _checkpoint(tr, state)
    if time_up:
        return "time"
    return "steps" if state.step >= tr.total_steps else None
