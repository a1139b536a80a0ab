"""Taylor scores are computed in float32 whatever the load dtype, and the model comes back bit-identical."""

from __future__ import annotations

import copy

import pytest
import torch

from shortllm.scoring.base import order_by_score
from shortllm.scoring.weights import float32_weights, taylor_scores
from tests.tiny_models import tiny_inputs, tiny_model


@pytest.mark.parametrize("lean", [True, False])
def test_a_bf16_model_gives_the_float32_scores_and_order(lean):
    bf16 = tiny_model("llama", num_layers=6, seed=3).to(torch.bfloat16).eval()
    fp32 = copy.deepcopy(bf16).float()  # the same (bf16-representable) weights, held in float32
    ids = tiny_inputs(bf16.config, batch=4, seq=24, seed=1)
    before = {k: v.clone() for k, v in bf16.state_dict().items()}

    expected = taylor_scores(fp32, ids, lean=lean)
    got = taylor_scores(bf16, ids, lean=lean)

    assert got == pytest.approx(expected, rel=1e-5)
    blocks = list(range(len(got)))
    assert order_by_score(got, blocks) == order_by_score(expected, blocks)
    after = bf16.state_dict()
    assert all(after[k].dtype == torch.bfloat16 and torch.equal(after[k], v) for k, v in before.items())
    assert all(p.grad is None for p in bf16.parameters())


def test_bf16_arithmetic_would_give_other_scores():
    """Why it matters: the same backward pass in bf16 is far from the float32 one (the old behaviour)."""
    bf16 = tiny_model("llama", num_layers=6, seed=3).to(torch.bfloat16).eval()
    ids = tiny_inputs(bf16.config, batch=4, seq=24, seed=1)
    reference = taylor_scores(bf16, ids)
    with torch.enable_grad():
        for p in bf16.model.layers.parameters():
            p.requires_grad_(True)
        from shortllm.scoring.weights import lean_calibration_loss, taylor_term

        lean_calibration_loss(bf16, ids).backward()
    in_bf16 = [sum(taylor_term(p, p.grad) for p in block.parameters()) for block in bf16.model.layers]
    assert in_bf16 != pytest.approx(reference, rel=1e-3)


def test_float32_weights_round_trip_keeps_parameters_and_values():
    model = tiny_model("gemma", num_layers=2).to(torch.float16)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    with float32_weights(model):
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert list(model.parameters()) == params  # same Parameter objects
    assert all(p.dtype == torch.float16 and torch.equal(p, b) for p, b in zip(params, before))
