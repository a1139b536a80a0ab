"""The loss maths on hand-built tensors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shortllm.training.objectives.losses import IGNORE, ce_sum, kd_objective, kd_sum


def test_ce_sum_is_the_summed_shifted_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    total, count = ce_sum(logits, labels)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), reduction="sum")
    assert count.item() == 8
    assert torch.allclose(total, expected)


def test_ce_sum_skips_ignored_positions():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 5)
    labels = torch.tensor([[1, IGNORE, 3, IGNORE]])  # only position 1 -> label 3 counts
    total, count = ce_sum(logits, labels)
    assert count.item() == 1
    assert math.isclose(total.item(), -torch.log_softmax(logits[0, 1], -1)[3].item(), rel_tol=1e-6)


def test_kd_sum_is_zero_for_identical_logits_and_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 9)
    labels = torch.zeros(2, 6, dtype=torch.long)
    assert abs(kd_sum(logits, logits.clone(), labels).item()) < 1e-5
    assert kd_sum(logits, torch.randn(2, 6, 9), labels).item() > 0


def test_kd_sum_matches_the_formula_with_temperature():
    torch.manual_seed(1)
    s, t = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    labels = torch.tensor([[0, 2, IGNORE]])  # position 0 -> label 2 counts, position 1 -> IGNORE does not
    temp = 2.0
    p_t = torch.softmax(t[0, 0] / temp, -1)
    manual = (p_t * (p_t.log() - torch.log_softmax(s[0, 0] / temp, -1))).sum() * temp**2
    assert math.isclose(kd_sum(s, t, labels, temp).item(), manual.item(), rel_tol=1e-5)


def test_kd_objective_mixes_kl_and_ce():
    assert kd_objective(2.0, 4.0, 0.25) == 0.25 * 4.0 + 0.75 * 2.0
    assert kd_objective(2.0, 4.0, 1.0) == 4.0
