"""`shortllm prune --blocks` end to end: tiny models for the mechanics, the embedded model for real."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from shortllm.models.arch import blocks_of
from tests.conftest import run_cli, tree_digest
from tests.tiny_models import tiny_inputs


def test_prune_tiny_writes_a_plain_checkpoint(tiny_llama_dir, tmp_path):
    before = tree_digest(tiny_llama_dir)
    out = tmp_path / "short"
    result = run_cli("prune", "-m", tiny_llama_dir, "--blocks", "1,2", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["removed"] == [1, 2] and info["kept_original"] == [0, 3]
    assert info["num_blocks_after"] == 2 and info["reload_max_diff"] == 0.0
    assert {"config.json", "model.safetensors", "shortllm.json", "README.md", "generation_config.json"} <= {
        p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left beside
    assert tree_digest(tiny_llama_dir) == before  # input untouched

    manifest = json.loads((out / "shortllm.json").read_text())
    assert manifest["verb"] == "prune" and manifest["options"]["blocks"] == [1, 2]
    assert manifest["results"]["params_after"] < manifest["results"]["params_before"]
    assert {"shortllm", "torch", "transformers", "accelerate", "safetensors"} <= set(manifest["versions"])
    assert "Removed blocks (original indices): 1, 2" in (out / "README.md").read_text()

    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager")
    pruned = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    assert pruned.config.num_hidden_layers == 2 and pruned.config.shortllm["kept_blocks"] == [0, 3]
    ids = tiny_inputs(original.config)
    with torch.no_grad():
        original.model.layers = torch.nn.ModuleList([original.model.layers[i] for i in (0, 3)])
        for i, layer in enumerate(original.model.layers):
            layer.self_attn.layer_idx = i
        original.config.num_hidden_layers = 2
        torch.testing.assert_close(pruned(ids).logits, original(ids).logits, atol=1e-5, rtol=0)


def test_dry_run_writes_nothing(tiny_llama_dir, tmp_path):
    out = tmp_path / "never"
    result = run_cli("prune", "-m", tiny_llama_dir, "--blocks", "3", "--out", out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Would remove 1 of 4 blocks: 3" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_old_output(tiny_llama_dir, tmp_path):
    out = tmp_path / "short"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert run_cli("prune", "-m", tiny_llama_dir, "-b", "0", "--out", out, "--overwrite").exit_code == 0
    assert not (out / "stale.txt").exists()
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 3


def test_prune_an_already_pruned_model_keeps_provenance(tiny_llama_dir, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert run_cli("prune", "-m", tiny_llama_dir, "-b", "1", "--out", first).exit_code == 0
    result = run_cli("prune", "-m", first, "-b", "0", "--out", second, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["removed_original"] == [0]
    assert AutoModelForCausalLM.from_pretrained(second).config.shortllm == {
        "original_num_blocks": 4, "kept_blocks": [2, 3]}


@pytest.mark.slow
def test_prune_embedded_model_end_to_end(demo_dir, tmp_path):
    out = tmp_path / "pruned-test"
    result = run_cli("prune", "--blocks", "20,21", "--out", out)
    assert result.exit_code == 0, result.output
    assert "Removed 2 of 30 blocks: 20, 21" in result.stdout

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 28 and len(blocks_of(model).layers) == 28
    assert model.config.shortllm["kept_blocks"] == [i for i in range(30) if i not in (20, 21)]
    ids = tok("The capital of France is", return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 5
    assert tok.decode(generated[0]).startswith("The capital of France is")
    assert tok.chat_template  # the tokenizer travelled along, chat template included
    # The card names the hub model the embedded GGUF was made from, as valid model-card metadata.
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    source = json.loads((out / "shortllm.json").read_text())["source"]
    assert source["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and source["spec"] == "smollm2-135m"


def test_a_cut_the_config_cannot_state_is_refused_before_loading(tmp_path, monkeypatch):
    # smollm3's no_rope_layer_interval=2 cannot state the pattern left by removing block 0: refused on the
    # config alone, before any weights load (also on --dry-run).
    from tests.tiny_models import tiny_model

    tiny_model("smollm3", 4).save_pretrained(tmp_path / "m")
    import shortllm.pruning.run as run

    def no_loading(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(run, "load_model", no_loading)
    for extra in (["--dry-run"], ["--out", tmp_path / "o", "--device", "cpu"]):  # a dry run reads no --device
        result = run_cli("prune", "-m", tmp_path / "m", "--blocks", "0", *extra)
        assert result.exit_code == 2 and "no_rope_layer_interval=2" in result.stderr, result.output
    assert not (tmp_path / "o").exists()
