"""Fast `ppl` equals a naive "remove the blocks, run the whole model"; lean `taylor` equals the whole gradient."""

import copy

import pytest
import torch

from shortllm.models.surgery import drop_blocks
from shortllm.scoring.perplexity import nll_sum, perplexity, removal_perplexities
from shortllm.scoring.weights import calibration_loss, lean_calibration_loss, taylor_scores
from tests.tiny_models import ARCHS, tiny_inputs, tiny_model


def naive_ppl(model, ids, removed):
    copy_ = copy.deepcopy(model)
    drop_blocks(copy_, removed)
    with torch.no_grad():
        return perplexity(*nll_sum(copy_(ids, use_cache=False).logits, ids))


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_ppl_equals_naive(arch):
    model = tiny_model(arch)
    ids = tiny_inputs(model.config, batch=3, seq=20)
    fast, base = removal_perplexities(model, ids, range(4), batch_size=2)
    with torch.no_grad():
        assert base == pytest.approx(perplexity(*nll_sum(model(ids, use_cache=False).logits, ids)), rel=1e-6)
    for i in range(4):
        assert fast[i] == pytest.approx(naive_ppl(model, ids, [i]), rel=1e-4)
    # With a block already removed (SLEB's later steps): continue from the cached inputs of that model.
    fast2, base2 = removal_perplexities(model, ids, [0, 2, 3], skip=[1])
    assert base2 == pytest.approx(naive_ppl(model, ids, [1]), rel=1e-4)
    for i in (0, 2, 3):
        assert fast2[i] == pytest.approx(naive_ppl(model, ids, sorted([1, i])), rel=1e-4)
    assert len(model.model.layers if hasattr(model, "model") and hasattr(model.model, "layers") else [0] * 4) == 4


@pytest.mark.parametrize("arch", ["llama", "gemma2", "qwen3", "gpt2", "opt"])
@pytest.mark.parametrize("norm", [1, 2])
def test_lean_taylor_equals_whole_gradient(arch, norm):
    model = tiny_model(arch)
    ids = tiny_inputs(model.config, batch=3, seq=16)
    lean = taylor_scores(model, ids, norm=norm, lean=True)
    whole = taylor_scores(model, ids, norm=norm, lean=False)
    assert lean == pytest.approx(whole, rel=1e-4)
    assert all(s > 0 for s in lean)
    assert all(p.grad is None for p in model.parameters())  # nothing left behind
    assert all(p.requires_grad for p in model.parameters())  # flags restored


@pytest.mark.parametrize("arch", ARCHS)
def test_lean_loss_equals_plain_loss_and_gradients(arch):
    model = tiny_model(arch)
    if arch == "gemma2":
        model.config.final_logit_softcapping = 3.0  # exercise the head's own post-processing
    ids = tiny_inputs(model.config, batch=3, seq=12)
    plain = calibration_loss(model, ids)
    plain.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    lean = lean_calibration_loss(model, ids)
    lean.backward()
    assert lean.item() == pytest.approx(plain.item(), rel=1e-5)
    for name, p in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_taylor_batch_size_equals_one_pass(arch, batch_size):
    """--batch-size splits the backward pass, not the scores: the chunks' gradients are summed first."""
    model = tiny_model(arch)
    ids = tiny_inputs(model.config, batch=3, seq=16)
    whole = taylor_scores(model, ids, norm=1)
    chunked = taylor_scores(model, ids, norm=1, batch_size=batch_size)
    assert chunked == pytest.approx(whole, rel=1e-4)
    summed = [sum(v) for v in zip(*(taylor_scores(model, ids[r:r + 1], norm=1) for r in range(3)))]
    assert chunked != pytest.approx(summed, rel=1e-3)  # not a sum of per-chunk reductions
    assert all(p.grad is None for p in model.parameters())
