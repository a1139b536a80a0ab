"""Training losses as functions of tensors: next-token cross-entropy, logit and hidden-state distillation.

All return *sums* over the predicted positions, not means: the training loop divides by the number of
predicted tokens of the whole global batch, so a step's gradient is the exact token mean whatever the split
into micro-batches and processes.

Two ways to the same numbers: :func:`ce_sum` / :func:`kd_sum` take full ``[B, T, V]`` logits (any model);
:func:`chunked_token_sums` takes the final hidden states of the predicted positions and applies the output
head a chunk of tokens at a time, each chunk under activation checkpointing when there are several, so neither
the forward nor the backward ever holds more than one chunk's float32 ``[chunk, V]`` logits (of student and
teacher). With a 49k vocabulary that is what dominated a CPU run's memory (Liger-Kernel's fused linear cross-entropy and
torchtune's chunked output are the same idea).

One estimate instead of the exact numbers (``retrain --kd-support``): :func:`teacher_support` and
:func:`support_sums` take the KL and CE from the student's logits at the teacher's most probable tokens plus
draws from the rest of its distribution, so the student's head is applied to a few hundred rows of its
weight per position instead of all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

IGNORE = -100
# Logits per chunk: 32M float32 = 128 MiB (682 tokens of a 49k vocabulary, 262 of a 128k one). Smaller chunks
# cost speed for no memory: 170-token chunks (1 << 23) made cpt 26% slower than transformers' Trainer; one chunk
# per 4 x 128 batch runs level with it (benchmarks/heal.py: 91 against 123 tokens/s on 2026-11-30, 133 against 124 on 2026-12-01).
CHUNK_ELEMENTS = 1 << 25
# With --gradient-checkpointing (memory before speed) the head follows suit: 32 MiB chunks, each recomputed in
# the backward, so a kd step never holds the batch's [n, V] logits of student and teacher at once.
CHECKPOINTED_CHUNK_ELEMENTS = 1 << 23
HIDDEN_LOSSES = ("nmse", "cosine")


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align logits at position t with the label at t + 1: ``([B, T-1, V], [B, T-1])``."""
    return logits[:, :-1, :], labels[:, 1:]


def predicted(labels: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]`` bool: the positions t whose next label ``labels[:, t+1]`` counts in the loss."""
    return labels[:, 1:] != IGNORE


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
    return _kl(s[keep], t[keep], temperature)


def _log_softmax_at(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log_softmax(logits / T)`` in float32 over the last dimension (no division at T = 1)."""
    logits = logits.float()
    return F.log_softmax(logits / temperature if temperature != 1 else logits, dim=-1)


def _teacher_side(teacher: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, sum_v q log q)`` of ``[n, V]`` teacher logits, without gradients: ``q = softmax(teacher / T)``
    (``[n, V]`` float32) and each row's negative entropy (``[n]``)."""
    with torch.no_grad():
        log_q = _log_softmax_at(teacher, temperature)
        q = log_q.exp()
        return q, torch.einsum("nv,nv->n", q, log_q)


def _kl_from(log_s: torch.Tensor, q: torch.Tensor, neg_entropy: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * sum_n sum_v q (log q - log_s)`` from the student's ``[n, V]`` log-probabilities at temperature T.

    Row dot products (``einsum``) instead of ``F.kl_div``'s elementwise form: the same sum with three fewer
    ``[n, V]`` temporaries, each a pass over memory that costs as much as the vocabulary-wide matmul on a CPU.
    """
    return (neg_entropy - torch.einsum("nv,nv->n", q, log_s)).sum() * temperature**2


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    return _kl_from(_log_softmax_at(student, temperature), *_teacher_side(teacher, temperature), temperature)


def teacher_support(teacher_logits: torch.Tensor, targets: torch.Tensor, support: int, tail_samples: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's side of :func:`support_sums`, without gradients: ``(ids [n, 1+k+m], weight [n, 1+k+m],
    teacher logits at ids [n, 1+k+m], log Z_t [n])`` from ``[n, V]`` teacher logits at temperature 1 and the
    ``[n]`` next-token targets.

    Column 0 of ``ids`` is the target, then the ``k = support`` most probable tokens, then ``m = tail_samples``
    draws (torch's global generator, saved in checkpoints) from the teacher's distribution restricted to the
    tokens not already listed. ``weight`` is each one's share of the teacher's mass: its probability for the
    target (0 when it is among the top k, counted there) and the top k, and for each draw an equal share of the
    mass left, summed from those tokens' probabilities (not ``1 - top mass``, which cancels in float32 when the
    teacher is confident). With ``m = 0`` the listed probabilities are renormalised to sum to 1. A row with no
    mass left draws uniformly; its draws weigh 0.
    """
    with torch.no_grad():
        teacher = teacher_logits.float()
        vocab = teacher.shape[-1]
        # one exp pass serves the partition, the tail's mass and the draws (multinomial takes unnormalised rows)
        peak = teacher.amax(-1, keepdim=True)
        scaled = (teacher - peak).exp_()  # [n, V] q * Z_t / exp(peak)
        total = scaled.sum(-1)
        log_zt = peak[:, 0] + total.log()
        top_logit, top = teacher.topk(min(support, vocab), dim=-1)
        target = targets[:, None]
        target_q = (teacher.gather(1, target) - log_zt[:, None]).exp() * (top != target).all(1, keepdim=True)
        ids = torch.cat([target, top], dim=1)
        weight = torch.cat([target_q, (top_logit - log_zt[:, None]).exp()], dim=1)
        if tail_samples and top.shape[1] < vocab:
            tail = scaled.scatter_(1, ids, 0.0)
            rest = tail.sum(-1)
            tail[rest == 0] = 1.0
            drawn = torch.multinomial(tail, tail_samples, replacement=True)
            ids = torch.cat([ids, drawn], dim=1)
            weight = torch.cat([weight, (rest / total / tail_samples)[:, None].expand(-1, tail_samples)], dim=1)
        else:
            weight = weight / weight.sum(-1, keepdim=True)
        return ids, weight, teacher.gather(1, ids), log_zt


def support_sums(student_h: torch.Tensor, head_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 ids: torch.Tensor, weight: torch.Tensor, teacher_at: torch.Tensor, log_zt: torch.Tensor
                 ) -> torch.Tensor:
    """``[2]``: (CE sum, KL sum) estimated from the student's logits at a few hundred tokens per position
    instead of the whole vocabulary (``--kd-support``): the student's output head is never applied in full.

    With ``q`` the teacher's distribution, ``z_s``/``z_t`` the two models' logits and ``d = z_s - z_t``,
    the forward KL is exactly ``KL(q || p_s) = log E_q[exp(d)] - E_q[d]`` (``Z_s / Z_t = E_q[exp(d)]``), and
    the student's log-partition is ``log Z_t + log E_q[exp(d)]``. Both expectations over ``q`` are taken on
    the tokens :func:`teacher_support` chose, with its weights: the target and the teacher's most probable
    tokens with their exact mass, and for the rest of the mass draws from the teacher (importance sampling,
    efficient while the student stays close to the teacher). The estimate is exact when the listed tokens
    cover the vocabulary; otherwise it is consistent in the number of draws (the log of an unbiased mean, so
    slightly biased low). The CE is ``log Z_s - z_s[target]`` with that log-partition, an estimate too (a
    sampled softmax, Jean et al. 2015, arXiv 1412.2007); the target is always listed, so raising its logit
    also raises the estimated partition. Without draws this is top-k distillation, which Anshumann et al.
    (ACL 2025, arXiv 2503.16870) show to be biased; their random-sampling KD draws from the teacher as here, to
    sparsify the teacher's side, and keeps the student's softmax exact, which makes its gradient unbiased. Here
    the draws spare the student's head, so the student's partition is estimated from them too and the gradient
    is not unbiased: measured at 64 listed + 64 drawn tokens, the KL 1.5-2.1% low and the gradient at cosine
    0.92-0.93 with the exact one (``benchmarks/kd_support.py``).

    Args:
        student_h: ``[n, H]`` the student's final hidden states.
        head_at: ``([n, H], [n, j] ids) -> [n, j]`` the student's logits at chosen ids (:meth:`Head.at`).
        ids, weight, teacher_at, log_zt: :func:`teacher_support`'s output for these positions (the target in
            column 0).

    Returns:
        ``[2]`` float32, summed over the ``n`` positions.
    """
    s_at = head_at(student_h, ids).float()
    d = s_at - teacher_at
    log_ratio = torch.logsumexp(weight.clamp_min(1e-30).log() + d, dim=-1)  # log Z_s / Z_t
    kl = (log_ratio - (weight * d).sum(-1)).sum()
    ce = (log_zt + log_ratio - s_at[:, 0]).sum()
    return torch.stack([ce, kl])


def _chunk(student_h: torch.Tensor, targets: torch.Tensor, teacher_h: torch.Tensor | None,
           head: Callable[[torch.Tensor], torch.Tensor], teacher_head: Callable[[torch.Tensor], torch.Tensor] | None,
           temperature: float) -> torch.Tensor:
    """``[2]``: (CE sum, KL sum or 0) of one chunk of positions; at T = 1 the CE's log-softmax serves the KL."""
    logits = head(student_h).float()
    log_p = F.log_softmax(logits, dim=-1)
    ce = F.nll_loss(log_p, targets, reduction="sum")
    if teacher_h is None:
        return torch.stack([ce, torch.zeros_like(ce)])
    with torch.no_grad():
        teacher = _teacher_side(teacher_head(teacher_h), temperature)
    log_s = log_p if temperature == 1 else _log_softmax_at(logits, temperature)
    return torch.stack([ce, _kl_from(log_s, *teacher, temperature)])


def chunked_token_sums(student_h: torch.Tensor, targets: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                       teacher_h: torch.Tensor | None = None,
                       teacher_head: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       temperature: float = 1.0, chunk_tokens: int | None = None,
                       support: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE sum, KL sum) from final hidden states, the output head applied chunk by chunk.

    Equal to :func:`ce_sum` and :func:`kd_sum` on ``head(hidden)`` (up to float summation order): same
    float32 softmax, same T^2 factor. Under autograd, when there is more than one chunk, each chunk is
    recomputed in the backward (``torch.utils.checkpoint``), so only the current chunk's logits are ever alive;
    a single chunk is not checkpointed (its backward would hold the same tensors, after a fourth pass).

    Args:
        student_h: ``[N, H]`` the student's final hidden states at the predicted positions.
        targets: ``[N]`` the next-token ids of those positions.
        head: ``[n, H] -> [n, V]`` the student's output head (softcapping or scaling included).
        teacher_h: ``[N, H]`` the teacher's final hidden states at the same positions, or None (no KL).
        teacher_head: the teacher's output head (run without gradients).
        temperature: the KD temperature T.
        chunk_tokens: positions per chunk (default: :data:`CHUNK_ELEMENTS` / V, at least 16).
        support: ``(k, m)``: with a teacher, estimate both sums from the student's logits at the target, the
            teacher's ``k`` most probable tokens and ``m`` draws from the rest (:func:`support_sums`; ``head``
            needs an ``at`` method); the student's head is then never applied to the whole vocabulary. Where
            ``1 + k + m`` reaches the vocabulary size the exact sums are cheaper, and are computed instead.

    Returns:
        Two float32 scalars (the KL one is 0 without a teacher).
    """
    n = student_h.shape[0]
    totals = student_h.new_zeros(2, dtype=torch.float32)
    if n == 0:
        return totals[0] + 0 * student_h.sum(), totals[1]
    vocab = getattr(head, "vocab_size", None) or 1
    if chunk_tokens is None:
        chunk_tokens = max(16, CHUNK_ELEMENTS // vocab)
    if support is not None and teacher_h is not None and 1 + sum(support) < vocab:
        return _support_token_sums(student_h, targets, head, teacher_h, teacher_head, chunk_tokens * vocab, support)
    return _chunked(_chunk, n, chunk_tokens, student_h.requires_grad, student_h, targets, teacher_h, head,
                    teacher_head, temperature)


def _chunked(fn: Callable[..., torch.Tensor], n: int, chunk_tokens: int, requires_grad: bool,
             *args: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum ``fn``'s ``[2]`` over chunks of ``chunk_tokens`` positions: each tensor argument of ``n`` rows is
    sliced, the others passed as they are. When there is more than one chunk and gradients are on, each chunk
    is recomputed in the backward (``torch.utils.checkpoint``); one chunk holding everything is not (that
    would only recompute it and keep the same tensors alive during its backward)."""
    grad = torch.is_grad_enabled() and requires_grad and n > chunk_tokens
    parts = []
    for start in range(0, n, chunk_tokens):
        piece = slice(start, start + chunk_tokens)
        sliced = [a[piece] if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == n else a for a in args]
        if grad:
            from torch.utils.checkpoint import checkpoint

            parts.append(checkpoint(fn, *sliced, use_reentrant=False))
        else:
            parts.append(fn(*sliced))
    totals = torch.stack(parts).sum(0)
    return totals[0], totals[1]


def _support_token_sums(student_h: torch.Tensor, targets: torch.Tensor, head: Any, teacher_h: torch.Tensor,
                        teacher_head: Callable[[torch.Tensor], torch.Tensor], chunk_elements: int,
                        support: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``--kd-support``: the teacher's full logits a chunk at a time, reduced at once to its support (no
    gradient, nothing recomputed); then the student's logits at those ids. Both sides take chunks of about
    ``chunk_elements`` floats: teacher logits, then gathered head weights (so ``--gradient-checkpointing``
    shrinks both)."""
    step = max(1, chunk_elements // head.vocab_size)
    with torch.no_grad():
        parts = [teacher_support(teacher_head(teacher_h[i:i + step]), targets[i:i + step], *support)
                 for i in range(0, teacher_h.shape[0], step)]
        ids, weight, teacher_at, log_zt = (torch.cat(p) for p in zip(*parts))
    per_token = ids.shape[1] * student_h.shape[1]
    return _chunked(support_sums, student_h.shape[0], max(1, chunk_elements // per_token),
                    student_h.requires_grad, student_h, head.at, ids, weight, teacher_at, log_zt)


def hidden_sum(student: list[torch.Tensor], teacher: list[torch.Tensor], kind: str = "nmse") -> torch.Tensor:
    """Hidden-state distillation: per position, the mean over matched blocks of a distance between the
    student block's output and its teacher counterpart's; summed over positions.

    ``nmse``: ``||s - t||^2 / ||t||^2`` (the teacher's norm makes depths of different scale comparable);
    ``cosine``: ``1 - cos(s, t)``. Minitron (arXiv 2407.14679) distils intermediate states of matched
    depths beside the logits; the normalisation here makes the term scale-free, so one weight fits every depth.

    Args:
        student: ``M`` tensors ``[N, H]``, the kept blocks' outputs at the predicted positions.
        teacher: ``M`` tensors ``[N, H]``, the teacher blocks' outputs they are matched with.
        kind: one of :data:`HIDDEN_LOSSES`.

    Returns:
        A float32 scalar (0 when nothing is matched).

    Raises:
        ValueError: an unknown kind or lists of different lengths.
    """
    if kind not in HIDDEN_LOSSES:
        raise ValueError(f"unknown hidden-state loss {kind!r}")
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student states against {len(teacher)} teacher states")
    if not student:
        return torch.zeros(())
    total = None
    for s, t in zip(student, teacher):
        s, t = s.float(), t.float()
        if kind == "nmse":
            per = ((s - t) ** 2).sum(-1) / (t**2).sum(-1).clamp_min(1e-12)
        else:
            per = 1 - F.cosine_similarity(s, t, dim=-1, eps=1e-12)
        total = per.sum() if total is None else total + per.sum()
    return total / len(student)


def objective_name(teacher: bool, alpha: float, hidden_weight: float = 0.0) -> str:
    """What the training loss of a run is, in words, for its card and summary: ``cross-entropy`` without a
    teacher, else the terms of :func:`kd_objective` (the KL is scaled by T^2), so that a reader compares it
    with the held-out cross-entropy only when it is one."""
    if not teacher:
        return "cross-entropy"
    terms = [(alpha, "KL to the teacher"), (1 - alpha, "cross-entropy"), (hidden_weight, "hidden-state loss")]
    shown = [(w, name) for w, name in terms if w]
    if len(shown) == 1 and shown[0][0] == 1:
        return shown[0][1]
    return " + ".join(f"{w:g} x {name}" for w, name in shown)


def kd_objective(ce, kl, alpha: float, hidden=0.0, hidden_weight: float = 0.0):
    """The distillation objective from (already normalised) terms: ``alpha*KL + (1-alpha)*CE + w*hidden``."""
    out = alpha * kl + (1 - alpha) * ce
    return out + hidden_weight * hidden if hidden_weight else out
