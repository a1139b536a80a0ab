"""``prune --replace linear`` (ReplaceMe): the fitted map is exact where the removed run is linear, is folded
into the right weights for every family it supports, and is refused by name where it cannot be folded."""

from __future__ import annotations

import json

import pytest
import torch

from shortllm.errors import BlockSelectionError
from shortllm.models.arch import MLP_OUTPUTS
from shortllm.models.surgery import drop_blocks
from shortllm.pruning.replace import ReplaceContext, ReplaceOptions, check_linear, linear_replace, runs_of
from shortllm.scoring.capture import full_pass
from tests.conftest import run_cli
from tests.tiny_models import ARCHS, FOLD_ARCHS, HIDDEN, POSITION_ARCHS, tiny_config, tiny_inputs, tiny_model


def test_runs_of():
    assert runs_of([7, 3, 4, 5, 9, 10]) == [(3, 5), (7, 7), (9, 10)]
    assert runs_of([]) == []


@torch.no_grad()
def _linear_run_model():
    """A 4-block llama whose block 2 maps h -> h + h Q exactly (attention off, norm and MLP replaced by one
    linear map), with the stream split so that block 1's residual lives in dims [:32] and its MLP output in
    [32:], and Q reads only [32:]. Then h_3 = a + M (I + Q): exactly what ReplaceMe's map on M can carry."""
    model = tiny_model("llama", 4, seed=3)
    half = HIDDEN // 2
    layers = model.model.layers
    model.model.embed_tokens.weight[:, half:] = 0
    for i in (0, 1):
        layers[i].self_attn.o_proj.weight[half:, :] = 0
    layers[0].mlp.down_proj.weight[half:, :] = 0
    layers[1].mlp.down_proj.weight[:half, :] = 0
    g = torch.Generator().manual_seed(7)
    q = torch.randn(HIDDEN, HIDDEN, generator=g) / HIDDEN ** 0.5
    q[:half, :] = 0  # reads only the MLP half
    linear = torch.nn.Linear(HIDDEN, HIDDEN, bias=False)
    linear.weight.copy_(q.T)  # nn.Linear computes x W^T = x Q
    layers[2].self_attn.o_proj.weight.zero_()
    layers[2].post_attention_layernorm = torch.nn.Identity()
    layers[2].mlp = linear
    return model.eval()


def test_exact_on_a_linear_run(one_thread):
    model = _linear_run_model()
    ids = tiny_inputs(model.config, batch=8, seq=16, seed=1)
    test_ids = tiny_inputs(model.config, batch=2, seq=16, seed=2)
    with torch.no_grad():
        want = model(test_ids, use_cache=False).logits
        removed_only = full_pass(model, test_ids, skip=[2]).logits
    assert (removed_only - want).abs().max() > 1e-2  # plain removal is visibly wrong
    record = linear_replace(ReplaceContext(model, ids, [2], ReplaceOptions(ridge=1e-12)))
    drop_blocks(model, [2])
    with torch.no_grad():
        got = model(test_ids, use_cache=False).logits
    assert len(model.model.layers) == 3
    assert torch.allclose(got, want, atol=1e-4, rtol=0), (got - want).abs().max()
    assert record["runs"][0]["folded_into"] == "block 1 mlp.down_proj"
    assert record["runs"][0]["join_error_linear"] < 1e-5 < record["runs"][0]["join_error_removed"]


FOLDABLE = [a for a in ARCHS + POSITION_ARCHS + FOLD_ARCHS if a in MLP_OUTPUTS]


def _join_errors(joined, target):
    """(global, per-token) relative join errors: ||d|| / ||t|| over everything, and the root of the mean over
    tokens of ||d_t||^2 / ||t_t||^2 (what the ``token`` objective minimises)."""
    d = (joined - target).reshape(-1, target.shape[-1])
    t = target.reshape(-1, target.shape[-1])
    return (d.norm() / t.norm()).item(), ((d ** 2).sum(-1) / (t ** 2).sum(-1)).mean().sqrt().item()


@pytest.mark.parametrize("objective", ["token", "mse"])
@pytest.mark.parametrize("arch", FOLDABLE)
def test_fold_lands_where_the_fit_says(arch, objective, one_thread):
    # The join error the fit predicts (from its weighted accumulators) is the one the pruned model really has:
    # the map was folded into the right projection, the right way round, with the family's scale, and each
    # objective measures the error its own way.
    model = tiny_model(arch, 5, seed=1)
    ids = tiny_inputs(model.config, batch=6, seq=16, seed=4)
    with torch.no_grad():
        target = full_pass(model, ids).inputs[4].double()
    record = linear_replace(ReplaceContext(model, ids, [2, 3], ReplaceOptions(ridge=1e-6, objective=objective),
                                          batch_size=4))
    run = record["runs"][0]
    assert record["objective"] == objective
    assert run["join_error_linear"] < run["join_error_removed"]
    drop_blocks(model, [2, 3])
    with torch.no_grad():
        joined = full_pass(model, ids).inputs[2].double()
    overall, per_token = _join_errors(joined, target)
    actual = per_token if objective == "token" else overall
    assert actual == pytest.approx(run["join_error_linear"], rel=1e-3, abs=1e-5)


def test_each_objective_wins_on_its_own_measure(one_thread):
    # Weighted least squares: the token objective has the lowest per-token error, plain least squares the lowest
    # overall one (both on the calibration tokens, with a negligible ridge). Tokens of very different sizes
    # (as the massive activations of real models) make the two fits differ.
    errors = {}
    for objective in ("token", "mse"):
        model = tiny_model("llama", 5, seed=1)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight[:, :4] *= 100  # tokens that use these units grow large
        ids = tiny_inputs(model.config, batch=6, seq=16, seed=4)
        with torch.no_grad():
            target = full_pass(model, ids).inputs[4].double()
        linear_replace(ReplaceContext(model, ids, [2, 3], ReplaceOptions(ridge=1e-9, objective=objective)))
        drop_blocks(model, [2, 3])
        with torch.no_grad():
            errors[objective] = _join_errors(full_pass(model, ids).inputs[2].double(), target)
    assert errors["token"][1] < errors["mse"][1] - 1e-4
    assert errors["mse"][0] < errors["token"][0] - 1e-4


@pytest.mark.parametrize("arch, words", [("gemma2", "post_feedforward_layernorm"), ("olmo2", "post_feedforward"),
                                         ("mixtral", "mixture of experts")])
def test_refused_by_name(arch, words):
    with pytest.raises(BlockSelectionError, match=words) as err:
        check_linear(tiny_config(arch, 4), [2])
    assert arch in str(err.value)


def test_run_at_block_zero_refused():
    with pytest.raises(BlockSelectionError, match="starts at block 0"):
        check_linear(tiny_config("llama", 4), [0, 1])


def test_opt_with_post_norm_refused():
    with pytest.raises(BlockSelectionError, match="do_layer_norm_before"):
        check_linear(tiny_config("opt", 4, do_layer_norm_before=False), [2])


def test_prune_replace_linear_end_to_end(tmp_path, one_thread):
    # The CLI: fit, fold, save, reload with stock transformers (the job's reload check), manifest and card.
    from tests.training.helpers import make_tiny_model_with_tokenizer

    src = make_tiny_model_with_tokenizer(tmp_path / "tiny", num_layers=5)
    out = tmp_path / "pruned"
    result = run_cli("prune", "-m", src, "--blocks", "2,3", "--replace", "linear", "--replace-samples", "4",
                     "--seq-len", "32", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "shortllm.json").read_text())
    replacement = manifest["results"]["replacement"]
    assert replacement["method"] == "linear" and replacement["runs"][0]["blocks"] == [2, 3]
    assert "ReplaceMe" in (out / "README.md").read_text()
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 3
    plain = AutoModelForCausalLM.from_pretrained(src)
    assert not torch.equal(reloaded.model.layers[1].mlp.down_proj.weight, plain.model.layers[1].mlp.down_proj.weight)
    assert torch.equal(reloaded.model.layers[0].mlp.down_proj.weight, plain.model.layers[0].mlp.down_proj.weight)


def test_prune_replace_refusal_writes_nothing(tmp_path):
    from tests.training.helpers import make_tiny_model_with_tokenizer

    src = make_tiny_model_with_tokenizer(tmp_path / "tiny", num_layers=4)
    out = tmp_path / "pruned"
    result = run_cli("prune", "-m", src, "--blocks", "0,1", "--replace", "linear", "--out", out)
    assert result.exit_code == 2
    assert "starts at block 0" in result.stderr and not out.exists()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_several_runs_equal_one_run_at_a_time(arch, one_thread):
    # Each run is fitted on the model with the earlier runs already replaced: fitting the runs 1 and 3-4 in one
    # call gives the weights of fitting run 1, cutting it, then fitting the run (now 2-3) on the cut model.
    ids = tiny_inputs(tiny_config(arch, 6), batch=6, seq=16, seed=5)
    together = tiny_model(arch, 6, seed=2)
    record = linear_replace(ReplaceContext(together, ids, [1, 3, 4], ReplaceOptions(ridge=1e-6), batch_size=4))
    drop_blocks(together, [1, 3, 4])
    apart = tiny_model(arch, 6, seed=2)
    linear_replace(ReplaceContext(apart, ids, [1], ReplaceOptions(ridge=1e-6), batch_size=4))
    drop_blocks(apart, [1])
    second = linear_replace(ReplaceContext(apart, ids, [2, 3], ReplaceOptions(ridge=1e-6), batch_size=4))
    drop_blocks(apart, [2, 3])
    assert [r["blocks"] for r in record["runs"]] == [[1, 1], [3, 4]]
    assert record["runs"][1]["join_error_linear"] == pytest.approx(second["runs"][0]["join_error_linear"],
                                                                   rel=1e-4)
    for (name, a), b in zip(together.state_dict().items(), apart.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
    with torch.no_grad():
        assert torch.allclose(together(ids).logits, apart(ids).logits, atol=1e-4, rtol=0)
