"""Chunked-head losses and hidden-state distillation against the full-vocabulary computation and by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shortllm.training.objectives.forward import BlockTap, LossSetup, matched_blocks, micro_losses
from shortllm.training.objectives.head import check_head, output_head
from shortllm.training.objectives.losses import IGNORE, ce_sum, chunked_token_sums, hidden_sum, kd_sum
from tests.tiny_models import ARCHS, tiny_inputs, tiny_model


def _labels(ids: torch.Tensor) -> torch.Tensor:
    labels = ids.clone()
    labels[0, 3] = IGNORE  # a masked position inside the row
    labels[-1, -4:] = IGNORE  # padding at the end
    return labels


@pytest.mark.parametrize("arch", ARCHS)
def test_chunked_ce_and_kl_equal_the_full_logits_computation(arch):
    """Every family of the table: head(last hidden state) reproduces the logits (softcapping and logit scaling
    included), and CE/KL summed chunk by chunk equal the full-vocabulary sums to 1e-6 (relative)."""
    student, teacher = tiny_model(arch, seed=0).eval(), tiny_model(arch, seed=1).eval()
    ids = tiny_inputs(student.config, batch=2, seq=12)
    labels = _labels(ids)
    head, t_head = output_head(student), output_head(teacher)
    assert check_head(student, head, "cpu") and check_head(teacher, t_head, "cpu")
    with torch.no_grad():
        full_s = student(ids, use_cache=False).logits
        full_t = teacher(ids, use_cache=False).logits
        ce_full, count = ce_sum(full_s, labels)
        kl_full = kd_sum(full_s, full_t, labels, 2.0)
        keep = labels[:, 1:] != IGNORE
        h_s = student(ids, use_cache=False, output_hidden_states=True).hidden_states[-1][:, :-1][keep]
        h_t = teacher(ids, use_cache=False, output_hidden_states=True).hidden_states[-1][:, :-1][keep]
        ce, kl = chunked_token_sums(h_s, labels[:, 1:][keep], head, h_t, t_head, 2.0, chunk_tokens=5)
    assert count.item() == keep.sum().item() == 2 * 11 - 1 - 4
    assert math.isclose(ce.item(), ce_full.item(), rel_tol=1e-6)
    assert math.isclose(kl.item(), kl_full.item(), rel_tol=1e-6)


@pytest.mark.parametrize("chunk,temperature", [(4, 1.5), (4, 1.0), (100, 1.0), (100, 1.5)])
def test_chunked_gradients_equal_the_full_logits_gradients(chunk, temperature):
    """Several checkpointed chunks and one plain chunk; at T = 1 the KL reuses the CE's log-softmax."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    t_head = torch.nn.Linear(8, 50, bias=False)
    h = torch.randn(23, 8, requires_grad=True)
    h_t = torch.randn(23, 8)
    y = torch.randint(0, 50, (23,))
    ce, kl = chunked_token_sums(h, y, head, h_t, t_head, temperature, chunk_tokens=chunk)
    (0.3 * ce + 0.7 * kl).backward()
    g_h, g_w = h.grad.clone(), head.weight.grad.clone()
    assert t_head.weight.grad is None  # the teacher's head runs without gradients
    h.grad, head.weight.grad = None, None
    logits = head(h)
    ce2 = F.cross_entropy(logits, y, reduction="sum")
    kl2 = F.kl_div(F.log_softmax(logits / temperature, -1), F.log_softmax(t_head(h_t) / temperature, -1),
                   log_target=True, reduction="sum") * temperature**2
    assert math.isclose(ce.item(), ce2.item(), rel_tol=1e-6) and math.isclose(kl.item(), kl2.item(), rel_tol=1e-5)
    (0.3 * ce2 + 0.7 * kl2).backward()
    assert torch.allclose(g_h, h.grad, atol=1e-6) and torch.allclose(g_w, head.weight.grad, atol=1e-6)


class _CountingHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner, self.calls = torch.nn.Linear(8, 50, bias=False), 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


@pytest.mark.parametrize("chunk,forward_calls", [(100, 1), (4, 2 * 6)])
def test_only_several_chunks_are_recomputed_in_the_backward(chunk, forward_calls):
    """One chunk is not checkpointed (a recomputation would be a fourth pass over the [n, V] logits for no
    memory saved); with 6 chunks each runs twice, once in the forward and once in the backward."""
    torch.manual_seed(0)
    head = _CountingHead()
    h = torch.randn(23, 8, requires_grad=True)
    ce, _ = chunked_token_sums(h, torch.randint(0, 50, (23,)), head, chunk_tokens=chunk)
    ce.backward()
    assert head.calls == forward_calls


def test_chunked_sums_of_no_position_are_zero_and_differentiable():
    head = torch.nn.Linear(4, 9)
    h = torch.zeros(0, 4, requires_grad=True)
    ce, kl = chunked_token_sums(h, torch.zeros(0, dtype=torch.long), head)
    ce.backward()
    assert ce.item() == 0 and kl.item() == 0


def test_hidden_sum_by_hand():
    s1, t1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    s2, t2 = torch.tensor([[1.0, 1.0], [3.0, 0.0]]), torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    # nmse per position: block 1: (1/4, 1/1); block 2: (0, 18/9); mean over the 2 blocks, summed over positions
    assert math.isclose(hidden_sum([s1, s2], [t1, t2], "nmse").item(), (0.25 + 1 + 0 + 2) / 2, rel_tol=1e-6)
    # cosine per position: block 1: (0, 0); block 2: (0, 1)
    assert math.isclose(hidden_sum([s1, s2], [t1, t2], "cosine").item(), 0.5, rel_tol=1e-6)
    with pytest.raises(ValueError):
        hidden_sum([s1], [t1], "l1")


def test_micro_losses_chunked_equal_full_with_hidden_and_taps(tmp_path):
    """The loop's micro-batch losses: chunked head == full logits; the hidden term equals a hand computation
    from the blocks' outputs (student block i <-> teacher block of the same original index)."""
    from shortllm.models.surgery import drop_blocks

    teacher = tiny_model("llama", seed=0).eval()
    student = tiny_model("llama", seed=0).eval()
    drop_blocks(student, [1])  # kept 0, 2, 3
    torch.manual_seed(3)
    for p in student.parameters():  # make the student differ from the teacher
        p.data.add_(0.01 * torch.randn_like(p))
    pairs = matched_blocks(student.config, teacher.config)
    assert pairs == [(0, 0), (1, 2), (2, 3)]
    ids = tiny_inputs(student.config, batch=2, seq=10)
    batch = {"input_ids": ids, "labels": _labels(ids)}
    results = {}
    for chunked in (False, True):
        setup = LossSetup(temperature=1.0, hidden="nmse", pairs=pairs,
                          student_tap=BlockTap(student, [0, 1, 2]), teacher_tap=BlockTap(teacher, [0, 2, 3]))
        if chunked:
            setup.head, setup.teacher_head = output_head(student), output_head(teacher)
        with torch.no_grad():
            results[chunked] = micro_losses(student, teacher, setup, batch, _no_autocast,
                                            with_teacher=True, with_hidden=True)
        setup.student_tap.remove()
        setup.teacher_tap.remove()
    for a, b in zip(results[False], results[True]):
        assert math.isclose(a.item(), b.item(), rel_tol=1e-6)
    keep = batch["labels"][:, 1:] != IGNORE
    with torch.no_grad():
        hs = student(ids, use_cache=False, output_hidden_states=True).hidden_states
        ht = teacher(ids, use_cache=False, output_hidden_states=True).hidden_states
    # hidden_states[k + 1] is block k's output, except the last entry (final norm applied): blocks 0..2 of 4 here
    manual = sum((((hs[i + 1] - ht[j + 1]) ** 2).sum(-1) / (ht[j + 1] ** 2).sum(-1))[:, :-1][keep].sum()
                 for i, j in [(0, 0), (1, 2)])
    last_s = BlockTap(student, [2])
    last_t = BlockTap(teacher, [3])
    with torch.no_grad(), last_s.capture() as so, last_t.capture() as to:
        student(ids, use_cache=False)
        teacher(ids, use_cache=False)
    manual = manual + (((so[2] - to[3]) ** 2).sum(-1) / (to[3] ** 2).sum(-1))[:, :-1][keep].sum()
    assert math.isclose(results[True][2].item(), manual.item() / 3, rel_tol=1e-5)


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()
