"""A block made exactly the identity is the first to remove for every criterion that looks at the model."""

import pytest
import torch

from shortllm.models.arch import blocks_of
from shortllm.models.loading import LoadSettings, load_model
from shortllm.scoring.base import ScoreContext
from shortllm.scoring.registry import get_criterion
from shortllm.scoring.run import Calibration, calibration_ids

IDENTITY = 10


@pytest.fixture(scope="module")
def identity_model(demo_dir):
    loaded = load_model(str(demo_dir), LoadSettings(device="cpu"))
    with torch.no_grad():
        for p in blocks_of(loaded.model).layers[IDENTITY].parameters():
            p.zero_()  # zero projections (and norms): the residual stream passes through unchanged
    ids, _ = calibration_ids(loaded, Calibration(samples=2, seq_len=32))
    return loaded.model, ids


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ppl", "sleb", "bi", "angular", "magnitude", "taylor"])
def test_identity_block_ranked_first(identity_model, name):
    model, ids = identity_model
    ctx = ScoreContext(model=model, input_ids=ids, num_remove=1, candidates=list(range(30)))
    result = get_criterion(name).run(ctx)
    assert result.order[0] == IDENTITY, (name, result.order[:5])
    assert sorted(result.order) == list(range(30))
