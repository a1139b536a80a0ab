"""``--kd-support``: the KL and CE estimated at the teacher's most probable tokens plus draws from the rest,
against the full-vocabulary sums and a hand computation; the head's row gather; the run's options."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from shortllm.training import retrain
from shortllm.training.config import KDOptions, TrainingError
from shortllm.training.forward import Head, check_head_at
from shortllm.training.losses import chunked_token_sums, support_sums, teacher_support
from tests.training.helpers import quick_config

V, H, N = 40, 12, 29


def _tensors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(H, V, bias=False)
    t_head = torch.nn.Linear(H, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, H, generator=g) * 0.5)
        t_head.weight.copy_(torch.randn(V, H, generator=g) * 0.5)
    h = torch.randn(N, H, generator=g).requires_grad_()
    h_t = torch.randn(N, H, generator=g)
    y = torch.randint(0, V, (N,), generator=g)
    return Head(head), Head(t_head), h, h_t, y


@pytest.mark.parametrize("chunk", [5, 100])
def test_whole_vocabulary_support_equals_the_exact_sums_and_gradients(chunk):
    """k = V: E_q[exp(d)] is then exact, so CE, KL and their gradients equal the full computation."""
    head, t_head, h, h_t, y = _tensors()
    ce, kl = chunked_token_sums(h, y, head, h_t, t_head, chunk_tokens=chunk)
    g_exact = torch.autograd.grad(0.3 * ce + 0.7 * kl, h)[0]
    ce_s, kl_s = chunked_token_sums(h, y, head, h_t, t_head, chunk_tokens=chunk, support=(V, 16))
    g_support = torch.autograd.grad(0.3 * ce_s + 0.7 * kl_s, h)[0]
    assert math.isclose(ce_s.item(), ce.item(), rel_tol=1e-6)
    assert math.isclose(kl_s.item(), kl.item(), rel_tol=1e-5)
    assert torch.allclose(g_support, g_exact, atol=1e-6)


def test_top_k_without_draws_is_the_renormalised_top_k_kl_by_hand():
    """m = 0: KL between the teacher's and the student's distributions both renormalised over the teacher's
    top k; CE with the student's log-partition estimated from those k tokens alone."""
    head, t_head, h, h_t, y = _tensors(1)
    k = 6
    ce, kl = chunked_token_sums(h, y, head, h_t, t_head, support=(k, 0))
    with torch.no_grad():
        s, t = head(h), t_head(h_t)
        top = t.topk(k, dim=-1).indices
        q = F.softmax(t.gather(1, top), dim=-1)
        log_p = F.log_softmax(s.gather(1, top), dim=-1)
        kl_hand = (q * (q.log() - log_p)).sum()
        # log Z_s ~ log Z_t + log sum_top q~ exp(s - t)
        log_zs = torch.logsumexp(t, -1) + torch.logsumexp(q.log() + s.gather(1, top) - t.gather(1, top), -1)
        ce_hand = (log_zs - s.gather(1, y[:, None])[:, 0]).sum()
    assert math.isclose(kl.item(), kl_hand.item(), rel_tol=1e-5)
    assert math.isclose(ce.item(), ce_hand.item(), rel_tol=1e-6)


def test_tail_draws_estimate_the_exact_kl():
    """Few support tokens and many draws: the estimate converges to the exact KL and CE (the draws carry the
    mass beyond the support); with no draws, the renormalised top k misses part of it."""
    head, t_head, h, h_t, y = _tensors(2)
    ce, kl = (x.item() for x in chunked_token_sums(h, y, head, h_t, t_head))
    torch.manual_seed(0)
    ce_s, kl_s = (x.item() for x in chunked_token_sums(h, y, head, h_t, t_head, support=(4, 4000)))
    ce_0, kl_0 = (x.item() for x in chunked_token_sums(h, y, head, h_t, t_head, support=(4, 0)))
    assert abs(kl_s - kl) / kl < 0.02 and abs(ce_s - ce) / ce < 0.005
    assert abs(kl_0 - kl) / kl > 0.1  # the draws are what closes the gap


def test_teacher_support_weights_are_the_teachers_mass():
    """The support's weights are the teacher's probabilities of its top k (in order); the draws share the
    rest equally, never land on the support, and the weights sum to 1."""
    torch.manual_seed(0)
    t = torch.randn(7, V) * 2
    ids, weight, at, log_zt = teacher_support(t, 5, 9)
    q = F.softmax(t, -1)
    top_q, top = q.topk(5, -1)
    assert torch.equal(ids[:, :5], top) and torch.allclose(weight[:, :5], top_q)
    assert torch.allclose(weight[:, 5:], ((1 - top_q.sum(-1)) / 9)[:, None].expand(-1, 9))
    assert torch.allclose(weight.sum(-1), torch.ones(7))
    assert not (ids[:, 5:, None] == top[:, None, :]).any()
    assert torch.equal(at, t.gather(1, ids)) and torch.allclose(log_zt, torch.logsumexp(t, -1))


def test_support_sums_gradient_reaches_a_trained_head():
    """With the head trained (--train-head), the gathered rows pass their gradient back to the weight."""
    head, t_head, h, h_t, y = _tensors(3)
    ids, weight, at, log_zt = teacher_support(t_head(h_t).detach(), V, 0)
    support_sums(h, y, head.at, ids, weight, at, log_zt).sum().backward()
    g = head.module.weight.grad.clone()
    head.module.weight.grad = None
    ce, kl = chunked_token_sums(h, y, head, h_t, t_head)
    (ce + kl).backward()
    assert torch.allclose(g, head.module.weight.grad, atol=1e-6)


class _Conv1D(torch.nn.Module):  # GPT-2's transposed linear, named as transformers names it
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(H, V))
        self.bias = torch.nn.Parameter(torch.randn(V))

    def forward(self, x):
        return x @ self.weight + self.bias


_Conv1D.__name__ = "Conv1D"


@pytest.mark.parametrize("make", [
    lambda: Head(torch.nn.Linear(H, V, bias=True)),
    lambda: Head(torch.nn.Linear(H, V, bias=False), scale=0.25),
    lambda: Head(torch.nn.Linear(H, V, bias=False), softcap=3.0),
    lambda: Head(_Conv1D()),
])
def test_head_at_equals_the_gathered_full_logits(make):
    head = make()
    h = torch.randn(5, H)
    ids = torch.randint(0, V, (5, 7))
    assert torch.allclose(head.at(h, ids), head(h).gather(1, ids), atol=1e-5)
    assert check_head_at(head, "cpu")


def test_a_head_whose_module_adds_more_than_its_weight_fails_the_check():
    class Adapted(torch.nn.Linear):  # a head with an adapter: its forward is not hidden @ weight.T
        def forward(self, x):
            return super().forward(x) + 0.1 * x.sum(-1, keepdim=True)

    assert not check_head_at(Head(Adapted(H, V, bias=False)), "cpu")


def test_support_run_trains_resumes_exactly_and_records_its_options(pruned_tiny, small_text, tmp_path):
    """A kd run with --kd-support: its draws come from the global generator, saved in checkpoints, so a run
    stopped and resumed equals an uninterrupted one; its identity holds the support (a checkpoint of a run
    without it does not resume)."""
    from tests.training.test_heal_methods import _resumes_exactly

    kd = KDOptions(support=8, tail_samples=4)
    cfg = quick_config("kd", pruned_tiny, small_text, tmp_path / "x", max_steps=4, lr=1e-3, save_every=2, kd=kd)
    whole = _resumes_exactly(cfg, tmp_path)
    assert whole.loss_curve[-1]["kl"] > 0
    exact = retrain(replace(cfg, out=tmp_path / "exact", kd=KDOptions()))
    assert abs(exact.loss_curve[0]["kl"] - whole.loss_curve[0]["kl"]) > 1e-6  # an estimate, not the same sum
    assert whole.final_eval_loss < whole.initial_eval_loss
    interrupted = retrain(replace(cfg, out=tmp_path / "y", stop_after=2))
    assert not interrupted.finished
    with pytest.raises(TrainingError, match="from another run"):
        retrain(replace(cfg, out=tmp_path / "y", resume=True, kd=KDOptions(support=16, tail_samples=4)))


@pytest.mark.parametrize("kw,message", [
    ({"method": "cpt", "kd": KDOptions(support=8)}, "--kd-support only applies to --method kd"),
    ({"kd": KDOptions(support=8, temperature=2.0)}, "temperature 1"),
    ({"kd": KDOptions(support=0)}, "--kd-support 0 must be at least 1"),
    ({"kd": KDOptions(support=8, tail_samples=-1)}, "--kd-tail-samples -1 is negative"),
])
def test_bad_support_options_are_refused_before_anything_is_written(pruned_tiny, small_text, tmp_path, kw, message):
    method = kw.pop("method", "kd")
    with pytest.raises(TrainingError, match=message):
        retrain(quick_config(method, pruned_tiny, small_text, tmp_path / "o", **kw))
    assert not (tmp_path / "o").exists()
