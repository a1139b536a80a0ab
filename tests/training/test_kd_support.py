"""``--kd-support``: the KL and CE estimated at the teacher's most probable tokens plus draws from the rest,
against the full-vocabulary sums and a hand computation; the head's row gather; the run's options."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shortllm.training import retrain
from shortllm.training.config import KDOptions, TrainConfig, TrainingError
from shortllm.training.objectives.head import Head, check_head_at
from shortllm.training.objectives.losses import chunked_token_sums, support_sums, teacher_support
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


def _exact(head, t_head, h, h_t, y):
    ce, kl = chunked_token_sums(h, y, head, h_t, t_head)
    return ce, kl


def _estimate(head, t_head, h, h_t, y, k, m):
    return support_sums(h, head.at, *teacher_support(t_head(h_t).detach(), y, k, m))


@pytest.mark.parametrize("m", [0, 16])
def test_a_support_covering_the_vocabulary_gives_the_exact_sums_and_gradients(m):
    """k = V: E_q[exp(d)] is then exact, so CE, KL and their gradients equal the full computation; and
    chunked_token_sums takes the exact path itself when 1 + k + m reaches V."""
    head, t_head, h, h_t, y = _tensors()
    ce, kl = _exact(head, t_head, h, h_t, y)
    g_exact = torch.autograd.grad(0.3 * ce + 0.7 * kl, h)[0]
    ce_s, kl_s = _estimate(head, t_head, h, h_t, y, V, m)
    g_support = torch.autograd.grad(0.3 * ce_s + 0.7 * kl_s, h)[0]
    assert math.isclose(ce_s.item(), ce.item(), rel_tol=1e-6)
    assert math.isclose(kl_s.item(), kl.item(), rel_tol=1e-5)
    assert torch.allclose(g_support, g_exact, atol=1e-6)
    ce_c, kl_c = chunked_token_sums(h, y, head, h_t, t_head, support=(V - 1 - m, m))
    assert ce_c.item() == ce.item() and kl_c.item() == kl.item()


def test_top_k_without_draws_is_the_renormalised_kl_over_the_top_k_and_the_target_by_hand():
    """m = 0: KL between the teacher's and the student's distributions, both renormalised over the teacher's
    top k and the target; CE with the student's log-partition estimated from those tokens alone."""
    head, t_head, h, h_t, y = _tensors(1)
    k = 6
    ce, kl = chunked_token_sums(h, y, head, h_t, t_head, support=(k, 0))
    kl_hand = ce_hand = 0.0
    with torch.no_grad():
        s, t = head(h), t_head(h_t)
        for i in range(N):
            listed = sorted(set(t[i].topk(k).indices.tolist()) | {int(y[i])})
            q = F.softmax(t[i, listed], -1)
            kl_hand += (q * (q.log() - F.log_softmax(s[i, listed], -1))).sum().item()
            log_zs = torch.logsumexp(t[i], -1) + torch.logsumexp(q.log() + s[i, listed] - t[i, listed], -1)
            ce_hand += (log_zs - s[i, y[i]]).item()
    assert math.isclose(kl.item(), kl_hand, rel_tol=1e-5)
    assert math.isclose(ce.item(), ce_hand, rel_tol=1e-6)


def test_tail_draws_estimate_the_exact_kl():
    """Few support tokens and many draws: the estimate converges to the exact KL and CE (the draws carry the
    mass beyond the support); with no draws, the renormalised top k misses part of it."""
    head, t_head, h, h_t, y = _tensors(2)
    ce, kl = (x.item() for x in _exact(head, t_head, h, h_t, y))
    torch.manual_seed(0)
    ce_s, kl_s = (x.item() for x in chunked_token_sums(h, y, head, h_t, t_head, support=(4, 4000)))
    ce_0, kl_0 = (x.item() for x in chunked_token_sums(h, y, head, h_t, t_head, support=(4, 0)))
    assert abs(kl_s - kl) / kl < 0.02 and abs(ce_s - ce) / ce < 0.005
    assert abs(kl_0 - kl) / kl > 0.1  # the draws are what closes the gap


def test_teacher_support_lists_the_target_the_top_k_and_draws_with_their_mass():
    """Column 0 is the target, with its probability unless it is in the top k (counted there, weight 0);
    then the top k with theirs; the draws share the rest equally (summed from the tail, not 1 - top mass) and
    never land on a listed token; the weights sum to 1."""
    torch.manual_seed(0)
    t = torch.randn(7, V) * 2
    y = torch.randint(0, V, (7,))
    y[0] = t[0].argmax()  # one target inside the top k
    ids, weight, at, log_zt = teacher_support(t, y, 5, 9)
    q = F.softmax(t, -1)
    top_q, top = q.topk(5, -1)
    assert torch.equal(ids[:, 0], y) and torch.equal(ids[:, 1:6], top) and torch.allclose(weight[:, 1:6], top_q)
    inside = (top == y[:, None]).any(1)
    assert inside[0] and torch.allclose(weight[:, 0], torch.where(inside, 0.0, q.gather(1, y[:, None])[:, 0]))
    listed_mass = top_q.sum(-1) + weight[:, 0]
    assert torch.allclose(weight[:, 6:], ((1 - listed_mass) / 9)[:, None].expand(-1, 9), atol=1e-7)
    assert torch.allclose(weight.sum(-1), torch.ones(7))
    assert not (ids[:, 6:, None] == ids[:, None, :6]).any()
    assert torch.equal(at, t.gather(1, ids)) and torch.allclose(log_zt, torch.logsumexp(t, -1))


def test_a_confident_teacher_keeps_its_tiny_tail_mass():
    """The mass left for the draws is summed from the tail's probabilities: 1 - (top mass) in float32 would be
    0 (or 1e-7 of rounding) for a teacher this sure."""
    t = torch.full((1, V), -30.0)
    t[0, 0] = 0.0
    ids, weight, _, _ = teacher_support(t, torch.tensor([0]), 1, 3)
    expected = (V - 1) * math.exp(-30.0)  # ~3.6e-12
    assert math.isclose(weight[0, 2:].sum().item(), expected, rel_tol=1e-4)


def test_the_student_side_in_several_checkpointed_chunks_equals_one_chunk():
    """The gathered head rows are chunked too (with the teacher's chunk budget): values and gradients equal
    the single-chunk computation (m = 0: no draws, so both see the same tokens)."""
    head, t_head, h, h_t, y = _tensors(4)
    ce, kl = chunked_token_sums(h, y, head, h_t, t_head, chunk_tokens=100, support=(4, 0))
    g_one = torch.autograd.grad(ce + kl, h)[0]
    calls = []
    real_at = head.at
    head.at = lambda *a: calls.append(1) or real_at(*a)
    ce_c, kl_c = chunked_token_sums(h, y, head, h_t, t_head, chunk_tokens=3, support=(4, 0))
    g_chunks = torch.autograd.grad(ce_c + kl_c, h)[0]
    assert len(calls) == 2 * math.ceil(N / 2)  # chunks of 3 x 40 // (5 x 12) = 2 positions, each run twice
    assert math.isclose(ce_c.item(), ce.item(), rel_tol=1e-6) and math.isclose(kl_c.item(), kl.item(), rel_tol=1e-5)
    assert torch.allclose(g_chunks, g_one, atol=1e-6)


def test_support_sums_gradient_reaches_a_trained_head():
    """With the head trained (--train-head), the gathered rows pass their gradient back to the weight."""
    head, t_head, h, h_t, y = _tensors(3)
    _estimate(head, t_head, h, h_t, y, V, 0).sum().backward()
    g = head.module.weight.grad.clone()
    head.module.weight.grad = None
    ce, kl = _exact(head, t_head, h, h_t, y)
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
    options = json.loads((tmp_path / "a" / "shortllm.json").read_text())["options"]
    assert options["kd"]["support"] == 8 and options["kd"]["tail_samples"] == 4
    assert whole.loss_path == "teacher support"
    interrupted = retrain(replace(cfg, out=tmp_path / "y", stop_after=2))
    assert not interrupted.finished
    with pytest.raises(TrainingError, match="from another run"):
        retrain(replace(cfg, out=tmp_path / "y", resume=True, kd=KDOptions(support=16, tail_samples=4)))


def test_runs_without_support_keep_their_identity():
    """Checkpoints of kd runs made before --kd-support resume: the identity gains no key without it; with it,
    the default number of draws is spelled out (the same run whether given or not)."""
    from shortllm.training.config import TAIL_SAMPLES, run_identity

    def kd_identity(kd):
        return run_identity(TrainConfig(method="kd", out=Path("o"), kd=kd), "m", "d", 10, 4)["kd"]

    assert set(kd_identity(KDOptions())) == {"teacher", "alpha", "temperature"}
    assert kd_identity(KDOptions(support=8)) == kd_identity(KDOptions(support=8, tail_samples=TAIL_SAMPLES))
    assert kd_identity(KDOptions(support=8))["tail_samples"] == TAIL_SAMPLES


def test_a_head_that_cannot_be_gathered_is_refused_before_training(pruned_tiny, small_text, tmp_path, monkeypatch):
    import shortllm.training.objectives.forward as forward

    monkeypatch.setattr(forward, "check_head_at", lambda head, device: False)
    with pytest.raises(TrainingError, match="--kd-support needs the student's output head"):
        retrain(quick_config("kd", pruned_tiny, small_text, tmp_path / "o", kd=KDOptions(support=8)))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kw,message", [
    ({"method": "cpt", "kd": KDOptions(support=8)}, "--kd-support only applies to --method kd"),
    ({"kd": KDOptions(support=8, temperature=2.0)}, "temperature 1"),
    ({"kd": KDOptions(support=0)}, "--kd-support 0 must be at least 1"),
    ({"kd": KDOptions(support=8, tail_samples=-1)}, "--kd-tail-samples -1 is negative"),
    ({"kd": KDOptions(tail_samples=8)}, "--kd-tail-samples applies with --kd-support"),
])
def test_bad_support_options_are_refused_before_anything_is_written(pruned_tiny, small_text, tmp_path, kw, message):
    method = kw.pop("method", "kd")
    with pytest.raises(TrainingError, match=message):
        retrain(quick_config(method, pruned_tiny, small_text, tmp_path / "o", **kw))
    assert not (tmp_path / "o").exists()
