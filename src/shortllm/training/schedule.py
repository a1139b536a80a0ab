"""Learning-rate schedules: by steps (transformers' warmup + cosine / linear), or by how much of a time budget
is spent (``--max-time``).

A run with ``--max-time`` does not know its step count in advance: how many steps fit in 10 minutes depends on
the machine, the load and the method. Its schedule is the same shape (linear warm-up over the first 5%, then
cosine down to ``lr x --min-lr-ratio``, or linear down to 0) over *progress* instead of steps: the larger of
the share of the time spent and the share of the steps done (``--max-steps`` / ``--max-tokens`` / one pass
over the data stays an upper bound). So the schedule ends when the budget does, and a run that reaches its
step count first ends its schedule there, as a step-planned run would.
"""

from __future__ import annotations

import math
from typing import Any

import torch

WARMUP_SHARE = 0.05  # the default warm-up of both kinds: 5% of the steps, or of the progress


def schedule_factor(progress: float, warmup_share: float, kind: str, min_lr_ratio: float) -> float:
    """The learning rate's multiplier at ``progress`` (0 at the start of the run, 1 at its end).

    Linear warm-up from 0 over ``[0, warmup_share)``, then ``kind``: "cosine" from 1 down to ``min_lr_ratio``
    (``min + (1 - min) * (1 + cos(pi * q)) / 2``, q the share of the decay done: transformers'
    ``get_cosine_with_min_lr_schedule_with_warmup`` over progress instead of steps), or "linear" from 1 to 0
    (``get_linear_schedule_with_warmup``). Progress past 1 stays at the end value.
    """
    if progress < warmup_share:
        return progress / warmup_share
    q = min(1.0, (progress - warmup_share) / max(1.0 - warmup_share, 1e-12))
    if kind == "linear":
        return 1.0 - q
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * q))


class BudgetSchedule(torch.optim.lr_scheduler.LRScheduler):
    """The schedule of a ``--max-time`` run: each group's lr is its base lr x the schedule's factor at the
    progress the loop reports after every step (:meth:`advance`).

    The warm-up is the first 5% of the progress, or with ``warmup_steps`` the first that many steps (linear
    from 0, as transformers' step schedules), after which the decay runs from the progress reached then to 1.
    Its state (progress, steps, where the decay started, base lrs) is saved in checkpoints like any
    scheduler's, so a resumed run continues at the same learning rate.
    """

    def __init__(self, optimizer: Any, kind: str, min_lr_ratio: float, warmup_steps: int | None = None):
        self.kind, self.min_lr_ratio, self.warmup_steps = kind, min_lr_ratio, warmup_steps
        self.progress, self.steps = 0.0, 0
        # where the decay starts (a share of the progress); None while warming up by steps
        self.decay_from = WARMUP_SHARE if warmup_steps is None else (0.0 if warmup_steps == 0 else None)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        if self.decay_from is None:
            factor = self.steps / self.warmup_steps
        else:
            factor = schedule_factor(self.progress, self.decay_from, self.kind, self.min_lr_ratio)
        return [base * factor for base in self.base_lrs]

    def advance(self, progress: float, steps: int) -> None:
        """Set the learning rate for the next step from the run's progress (0..1, see the module docstring)
        after ``steps`` steps."""
        self.progress, self.steps = progress, steps
        if self.decay_from is None and steps >= self.warmup_steps:
            self.decay_from = progress
        self.step()


def make_schedule(optimizer: Any, kind: str, total_steps: int, warmup_steps: int | None, min_lr_ratio: float,
                  by_time: bool) -> Any:
    """The run's learning-rate scheduler.

    Args:
        kind: "cosine" (down to ``lr x min_lr_ratio``) or "linear" (down to 0), after the warm-up.
        warmup_steps: linear warm-up steps; None only with ``by_time`` (the first 5% of the progress).
        by_time: a ``--max-time`` run, whose step count is not known in advance.

    Returns:
        :class:`BudgetSchedule` when ``by_time``, else transformers' step schedule over ``total_steps``.
    """
    if by_time:
        return BudgetSchedule(optimizer, kind, min_lr_ratio, warmup_steps)
    if kind == "linear":  # HF Trainer's default (the Shortened LLaMA / LLM-Pruner LoRA recipe): to 0
        from transformers.optimization import get_linear_schedule_with_warmup

        return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup_steps, total_steps,
                                                       min_lr_rate=min_lr_ratio)


def run_progress(step: int, total_steps: int, run_s: float, max_time_s: float) -> float:
    """Progress of a ``--max-time`` run after ``step`` steps and ``run_s`` seconds of training: the larger
    share of its two budgets spent (steps of ``total_steps``, seconds of ``max_time_s``)."""
    return max(step / total_steps, run_s / max_time_s)


def step_pace(session_s: float, first_step_s: float, done: int, earlier: float | None) -> float:
    """Seconds per step of this session after ``done`` steps, ``session_s`` seconds into it.

    The session's first step (``first_step_s``: allocations, lazy set-up, a cold cache) is left out once there
    is a second; until then the pace of the earlier session (``earlier``, from the checkpoint) stands in, and
    only a fresh run's first step measures itself.
    """
    if done > 1:
        return (session_s - first_step_s) / (done - 1)
    return earlier if earlier is not None else session_s


def time_is_up(run_s: float, pace_s: float, tail_s: float, max_time_s: float) -> bool:
    """Whether a ``--max-time`` run ends now: its next step, at this pace, would end past the limit.

    Args:
        run_s: training seconds at this step's clock reading (taken before the optimizer update).
        pace_s: seconds from one reading to the next (:func:`step_pace`).
        tail_s: seconds from a reading to the end of its step (the optimizer update), as last measured.

    The run never starts a step it expects to end late, so it overshoots by at most the error of that
    estimate; the final held-out loss and the save come after the limit.
    """
    return run_s + pace_s + tail_s > max_time_s
