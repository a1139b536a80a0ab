"""``prune --replace block`` (LLM-Streamline): the slot learns the run's map, the output reloads in stock
transformers one block deeper than the pure cut, and --ratio counts the block that stays."""

from __future__ import annotations

import json

import torch

from shortllm.models.params import ParamCount
from shortllm.pruning.plan import fit_within_ratio
from shortllm.pruning.replace import ReplaceContext, ReplaceOptions
from shortllm.pruning.streamline import block_inputs, block_replace, replacement_slots
from tests.conftest import run_cli
from tests.tiny_models import tiny_inputs, tiny_model


def test_slots_are_the_last_block_of_each_run():
    assert replacement_slots([2, 3, 4, 7, 9, 10]) == [4, 7, 10]


def test_ratio_counts_the_block_that_stays():
    """30 equal blocks of 10 in a total of 400, ratio 0.2 (80 parameters): the pure cut removes 8 blocks; with
    one block kept back per run the contiguous choice cuts 9, so 8 blocks' worth still goes."""
    counts = ParamCount(total=400, per_block=[10] * 30, embeddings=100, head=0, other=0)

    def choose(k):
        return list(range(20 - k, 20))  # one contiguous run ending at block 19

    assert len(fit_within_ratio(counts, 0.2, choose, 8)) == 8
    cut = fit_within_ratio(counts, 0.2, choose, 29, kept_back=replacement_slots)
    assert cut == list(range(11, 20))
    gone = [b for b in cut if b not in replacement_slots(cut)]
    assert sum(counts.per_block[b] for b in gone) <= 0.2 * counts.total


def test_trained_block_maps_the_run_input_to_its_output(one_thread):
    model = tiny_model("llama", 6, seed=0).eval()
    ids = tiny_inputs(model.config, batch=8, seq=16, seed=1)
    acts = block_inputs(model, ids, [2, 5], batch_size=4)  # run 2-4: input of block 2, input of block 5
    original = {k: v.clone() for k, v in model.model.layers[4].state_dict().items()}
    untouched = model.model.layers[1].self_attn.q_proj.weight.clone()
    record = block_replace(ReplaceContext(model, ids, [2, 3, 4], ReplaceOptions(init="first", epochs=30, lr=3e-3),
                                          batch_size=4))
    run = record["runs"][0]
    assert record["kept_back"] == [4] and run["init"] == "block 2" and run["replaced_by"] == "block 4"
    assert run["error_after"] < 0.5 * run["error_before"]
    assert any(not torch.equal(model.model.layers[4].state_dict()[k], v) for k, v in original.items())
    assert torch.equal(model.model.layers[1].self_attn.q_proj.weight, untouched)  # only the slot trained
    assert all(p.grad is None for p in model.parameters())
    # the slot alone, fed the run's input, reproduces the reported error
    from shortllm.scoring.capture import bypass, block_template

    with torch.no_grad(), bypass(model, skip=[0, 1, 2, 3], template=block_template(model)):
        got = block_inputs(_feed(model, acts[2]), ids, [5], batch_size=8)[5]
    # per token, relative to the token's own squared norm (a global MSE lets the first token's massive
    # activations decide alone), then averaged over tokens
    rel = float((((got - acts[5]) ** 2).sum(-1) / (acts[5] ** 2).sum(-1)).mean())
    assert abs(rel - run["error_after"]) < 1e-4
    assert abs(rel - float(((got - acts[5]) ** 2).mean() / (acts[5] ** 2).mean())) > 5e-4  # the two differ here


def _feed(model, x):
    """Make block 0's input ``x`` (every block before the slot is bypassed, so the slot receives it)."""
    layers = model.model.layers

    def hook(_m, args, kwargs):
        if args:
            return (x, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x}

    layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    return model


def test_prune_replace_block_reloads_with_one_more_block(tmp_path, one_thread):
    from transformers import AutoModelForCausalLM

    from tests.training.helpers import make_tiny_model_with_tokenizer

    src = make_tiny_model_with_tokenizer(tmp_path / "tiny", num_layers=6)
    out = tmp_path / "pruned"
    result = run_cli("prune", "-m", src, "--blocks", "2,3,4", "--replace", "block", "--replace-samples", "4",
                     "--seq-len", "32", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "shortllm.json").read_text())["results"]
    assert manifest["replacement"]["method"] == "block" and manifest["kept_original"] == [0, 1, 4, 5]
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 4  # 6 - 3 removed + 1 trained replacement
    assert reloaded.config.shortllm["kept_blocks"] == [0, 1, 4, 5]
    plain = AutoModelForCausalLM.from_pretrained(src)
    assert not torch.equal(reloaded.model.layers[2].mlp.down_proj.weight, plain.model.layers[4].mlp.down_proj.weight)
    assert torch.equal(reloaded.model.layers[3].mlp.down_proj.weight, plain.model.layers[5].mlp.down_proj.weight)


def test_block_options_reach_the_training(tmp_path, one_thread):
    # --replace-init/-epochs/-lr/-objective reach the trained block; --replace-samples defaults to the method's
    from tests.training.helpers import make_tiny_model_with_tokenizer

    src = make_tiny_model_with_tokenizer(tmp_path / "tiny", num_layers=6)
    out = tmp_path / "pruned"
    result = run_cli("prune", "-m", src, "--blocks", "2,3,4", "--replace", "block", "--replace-init", "first",
                     "--replace-epochs", "1", "--replace-lr", "0.01", "--replace-objective", "mse",
                     "--seq-len", "16", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "shortllm.json").read_text())
    options = manifest["options"]["replace_options"]
    assert options == {"samples": 256, "ridge": 1e-4, "objective": "mse", "epochs": 1, "lr": 0.01, "init": "first"}
    replacement = manifest["results"]["replacement"]
    assert replacement["objective"] == "mse" and replacement["epochs"] == 1 and replacement["lr"] == 0.01
    assert replacement["runs"][0]["init"] == "block 2" and replacement["tokens"] == 256 * 16
    bad = run_cli("prune", "-m", src, "--blocks", "2,3,4", "--replace", "block", "--replace-objective", "l1",
                  "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "--replace-objective" in bad.stderr and not (tmp_path / "bad").exists()


def test_block_inputs_equal_the_full_forward_and_stop_at_the_last_wanted_block(one_thread):
    model = tiny_model("llama", 6, seed=0).eval()
    ids = tiny_inputs(model.config, batch=6, seq=12, seed=2)
    with torch.no_grad():
        states = model(ids, output_hidden_states=True, use_cache=False).hidden_states  # states[i]: block i's input
    ran: list[str] = []
    hooks = [model.lm_head.register_forward_hook(lambda *_: ran.append("head")),
             model.model.layers[4].register_forward_hook(lambda *_: ran.append("block 4"))]
    acts = block_inputs(model, ids, [1, 4], batch_size=4)
    for h in hooks:
        h.remove()
    assert torch.equal(acts[1], states[1]) and torch.equal(acts[4], states[4])
    assert ran == []  # nothing after block 4's input ran: not block 4, not the head
    last = block_inputs(model, ids, [6], batch_size=4)[6]  # the last block's output (before the final norm)
    with torch.no_grad():
        out = []
        h = model.model.layers[5].register_forward_hook(lambda _m, _a, o: out.append(o[0] if isinstance(o, tuple) else o))
        model(ids, use_cache=False)
        h.remove()
    assert torch.equal(last, out[0])


def test_prune_cli_replace_defaults_are_the_core_defaults():
    import inspect

    from shortllm.cli.prune import prune as prune_command

    params = inspect.signature(prune_command).parameters
    core = ReplaceOptions()
    for name in ("ridge", "objective", "epochs", "lr", "init"):
        assert params[f"replace_{name}"].default == getattr(core, name), name
