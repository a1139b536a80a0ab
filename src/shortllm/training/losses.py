"""Training losses as functions of tensors: next-token cross-entropy and logit distillation.

Both return *sums* over the predicted positions, not means: the training loop divides by the number of
predicted tokens of the whole global batch, so a step's gradient is the exact token mean whatever the split
into micro-batches and processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align logits at position t with the label at t + 1: ``([B, T-1, V], [B, T-1])``."""
    return logits[:, :-1, :], labels[:, 1:]


def ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over positions whose next label is not IGNORE.

    Args:
        logits: ``[B, T, V]`` model outputs.
        labels: ``[B, T]`` token ids, IGNORE where no prediction counts (prompt, padding).

    Returns:
        (sum of the losses as a float32 scalar, number of predicted tokens as a long scalar).
    """
    logits, labels = shift(logits, labels)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    return loss, (labels != IGNORE).sum()


def kd_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
           temperature: float = 1.0) -> torch.Tensor:
    """Summed forward KL(teacher || student) of the temperature-softened distributions, times T^2.

    ``sum_v p_t(v) * (log p_t(v) - log p_s(v))`` with ``p = softmax(logits / T)``, over the same positions
    :func:`ce_sum` counts. The T^2 factor (Hinton et al.) keeps gradient magnitudes comparable across T.

    Returns:
        A float32 scalar.
    """
    s, labels = shift(student_logits, labels)
    t = teacher_logits[:, :-1, :]
    keep = labels != IGNORE
    log_s = F.log_softmax(s[keep].float() / temperature, dim=-1)
    log_t = F.log_softmax(t[keep].float() / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="sum")
    return kl * temperature**2


def kd_objective(ce: torch.Tensor, kl: torch.Tensor, alpha: float) -> torch.Tensor:
    """The distillation objective from (already normalised) CE and KL terms: ``alpha*KL + (1-alpha)*CE``."""
    return alpha * kl + (1 - alpha) * ce
