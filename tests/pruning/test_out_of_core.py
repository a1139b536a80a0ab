"""Out-of-core surgery (``pruning/out_of_core.py``): the files written tensor by tensor reload with stock
``from_pretrained`` into exactly the model that in-memory surgery saves, for every architecture of the table."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from shortllm.models.checkpoint import INDEX_NAME, WEIGHTS_NAME
from shortllm.models.loading import LoadSettings, load_config, load_skeleton
from shortllm.models.surgery import drop_blocks
from shortllm.pruning import out_of_core
from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import run_cli, tree_digest
from tests.tiny_models import ARCHS, MULTIMODAL_ARCHS, POSITION_ARCHS, tiny_inputs, tiny_model, tiny_multimodal_model

SMALL_SHARDS = "40KB"  # a tiny model's tensors over several shards


def reload(folder):
    """Stock ``from_pretrained`` that must find every tensor (nothing freshly initialised, nothing left over)."""
    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True,
                                                       attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def assert_same_model(a, b, ids):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name
    with torch.no_grad():
        assert torch.equal(a(ids, use_cache=False).logits, b(ids, use_cache=False).logits)
    config_a, config_b = a.config.to_dict(), b.config.to_dict()
    for config in (config_a, config_b):
        config.pop("_name_or_path", None)
    assert config_a == config_b


def prune_files(src, out, keep, max_shard_size="50GB", num_blocks=4):
    skeleton, source = load_skeleton(str(src))
    files = out_of_core.readable(source, skeleton, num_blocks, LoadSettings())
    assert files is not None
    out.mkdir()
    return out_of_core.write_pruned(files, load_config(source), keep, out, max_shard_size)


@pytest.mark.parametrize("arch", ARCHS + POSITION_ARCHS)
def test_out_of_core_equals_in_memory_surgery(arch, tmp_path, one_thread):
    model = tiny_model(arch)
    unsharded, sharded = tmp_path / "one", tmp_path / "many"
    model.save_pretrained(unsharded)
    model.save_pretrained(sharded, max_shard_size=SMALL_SHARDS)
    assert (sharded / INDEX_NAME).is_file() and not (unsharded / INDEX_NAME).exists()
    before = tree_digest(unsharded), tree_digest(sharded)
    ids = tiny_inputs(model.config)
    # in-memory surgery, saved and reloaded: the reference
    drop_blocks(model, [1])
    model.save_pretrained(tmp_path / "reference")
    reference = reload(tmp_path / "reference")

    # sharded source -> one file; one file -> shards
    one = prune_files(sharded, tmp_path / "out-one", [0, 2, 3])
    many = prune_files(unsharded, tmp_path / "out-many", [0, 2, 3], SMALL_SHARDS)
    assert one["shards"] == 1 and not (tmp_path / "out-one" / INDEX_NAME).exists()
    assert many["shards"] > 1
    index = json.loads((tmp_path / "out-many" / INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == many["bytes"] == one["bytes"]
    assert len(index["weight_map"]) == many["tensors"] == one["tensors"]
    for out in ("out-one", "out-many"):
        assert_same_model(reload(tmp_path / out), reference, ids)
    assert (tree_digest(unsharded), tree_digest(sharded)) == before  # inputs untouched


@pytest.mark.parametrize("arch", MULTIMODAL_ARCHS)
def test_out_of_core_multimodal_language_blocks(arch, tmp_path, one_thread):
    # The blocks are saved under another name than their module path (language_model.model.layers for Gemma 3):
    # the renaming follows the architecture table's saved name; the vision tower is copied untouched.
    from transformers import AutoModelForImageTextToText

    model = tiny_multimodal_model(arch)
    model.save_pretrained(tmp_path / "src", max_shard_size=SMALL_SHARDS)
    prune_files(tmp_path / "src", tmp_path / "out", [0, 2, 3], SMALL_SHARDS)
    drop_blocks(model, [1])
    pruned, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "out", output_loading_info=True,
                                                               attn_implementation="eager")
    assert not any(info.values()), info
    expected, got = model.state_dict(), pruned.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert pruned.config.get_text_config().num_hidden_layers == 3


def test_cli_uses_out_of_core_and_matches_the_in_memory_path(tiny_llama_dir, tmp_path):
    # Scoring in the same process leaves the model loaded: that run uses in-memory surgery.
    scored = run_cli("prune", "-m", tiny_llama_dir, "-k", "1", "-c", "magnitude", "--out", tmp_path / "mem",
                     "--json")
    assert scored.exit_code == 0, scored.output
    info = json.loads(scored.stdout)
    assert info["surgery"] == "in-memory" and info["written"] is None
    removed = info["removed"]
    result = run_cli("prune", "-m", tiny_llama_dir, "--blocks", ",".join(map(str, removed)), "--out",
                     tmp_path / "ooc", "--max-shard-size", SMALL_SHARDS, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["surgery"] == "out-of-core" and info["written"]["verify"] == "tensors+logits"
    assert info["reload_max_diff"] == 0.0 and info["written"]["shards"] > 1
    manifest = json.loads((tmp_path / "ooc" / "shortllm.json").read_text())
    assert manifest["results"]["surgery"] == "out-of-core" and manifest["options"]["max_shard_size"] == SMALL_SHARDS
    assert manifest["source"]["fingerprint"] == json.loads(
        (tmp_path / "mem" / "shortllm.json").read_text())["source"]["fingerprint"]
    assert f"Removed blocks (original indices): {removed[0]}" in (tmp_path / "ooc" / "README.md").read_text()
    assert {"generation_config.json", "config.json", INDEX_NAME} <= {p.name for p in (tmp_path / "ooc").iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert_same_model(reload(tmp_path / "ooc"), reload(tmp_path / "mem"), tiny_inputs(reload(tiny_llama_dir).config))


def test_big_models_are_checked_by_tensors_only(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(out_of_core, "LOGITS_CHECK_MAX_BYTES", 0)
    monkeypatch.setattr(out_of_core, "check_logits", lambda *a: pytest.fail("a big model was loaded"))
    result = run_cli("prune", "-m", tiny_llama_dir, "-b", "2", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "out-of-core surgery; checked tensor names, dtypes and shapes" in result.stdout
    manifest = json.loads((tmp_path / "o" / "shortllm.json").read_text())["results"]
    assert manifest["written"]["verify"] == "tensors" and manifest["reload_max_diff"] is None


def test_already_pruned_input_keeps_provenance(tiny_llama_dir, tmp_path):
    assert run_cli("prune", "-m", tiny_llama_dir, "-b", "0", "--out", tmp_path / "a").exit_code == 0
    result = run_cli("prune", "-m", tmp_path / "a", "-b", "1", "--out", tmp_path / "b", "--json")
    info = json.loads(result.stdout)
    assert info["surgery"] == "out-of-core" and info["kept_original"] == [1, 3]
    assert json.loads((tmp_path / "b" / "config.json").read_text())["shortllm"] == {
        "original_num_blocks": 4, "kept_blocks": [1, 3]}


def test_tied_embeddings_without_a_head_tensor(tmp_path, one_thread):
    model = tiny_model("llama", tie_word_embeddings=True)
    model.save_pretrained(tmp_path / "src")
    assert "lm_head.weight" not in load_file(tmp_path / "src" / WEIGHTS_NAME)
    prune_files(tmp_path / "src", tmp_path / "out", [0, 1, 3])
    drop_blocks(model, [2])
    pruned = reload(tmp_path / "out")
    assert pruned.lm_head.weight.data_ptr() == pruned.model.embed_tokens.weight.data_ptr()
    ids = tiny_inputs(model.config)
    with torch.no_grad():
        assert torch.equal(pruned(ids).logits, model(ids).logits)


@pytest.mark.parametrize("arch, prefix", [("gpt2", "transformer."), ("opt", "model."), ("llama", "model.")])
def test_checkpoint_of_the_bare_base_model(arch, prefix, tmp_path, one_thread):
    # Hub GPT-2 and OPT checkpoints store the base model's tensors without its prefix (h.0..., decoder.layers...).
    model = tiny_model(arch)
    model.save_pretrained(tmp_path / "src")
    tensors = load_file(tmp_path / "src" / WEIGHTS_NAME)
    save_file({k.removeprefix(prefix): v for k, v in tensors.items()}, tmp_path / "src" / WEIGHTS_NAME,
              metadata={"format": "pt"})
    prune_files(tmp_path / "src", tmp_path / "out", [0, 3])
    names = load_file(tmp_path / "out" / WEIGHTS_NAME).keys()
    assert not any(name.startswith(prefix) for name in names)
    drop_blocks(model, [1, 2])
    ids = tiny_inputs(model.config)
    with torch.no_grad():
        assert torch.equal(reload(tmp_path / "out")(ids).logits, model(ids).logits)


def test_pickled_weights_are_never_read(tiny_llama_dir, tmp_path):
    src = tmp_path / "bin"
    src.mkdir()
    shutil.copy(tiny_llama_dir / "config.json", src)
    torch.save(load_file(tiny_llama_dir / WEIGHTS_NAME), src / "pytorch_model.bin")
    before = tree_digest(src)
    result = run_cli("prune", "-m", src, "-b", "1", "--out", tmp_path / "o")
    assert_one_line_error(result, "has only pickled weights (pytorch_model.bin), which shortllm never loads")
    assert tree_digest(src) == before and not (tmp_path / "o").exists()


def test_other_dtype_uses_in_memory_surgery(tiny_llama_dir, tmp_path):
    result = run_cli("prune", "-m", tiny_llama_dir, "-b", "1", "--dtype", "bfloat16", "--out", tmp_path / "o",
                     "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["surgery"] == "in-memory"
    assert next(iter(load_file(tmp_path / "o" / WEIGHTS_NAME).values())).dtype == torch.bfloat16


def test_hub_snapshot_offline(tiny_llama_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from shortllm.data.offline import forget_reachability

    hub = tmp_path / "hub"
    snapshot = hub / "models--someone--tiny" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_llama_dir, snapshot)
    (hub / "models--someone--tiny" / "refs").mkdir()
    (hub / "models--someone--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    forget_reachability()
    result = run_cli("prune", "-m", "someone/tiny", "-b", "1", "--out", tmp_path / "o", "--json")
    forget_reachability()
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["surgery"] == "out-of-core" and info["reload_max_diff"] == 0.0
    assert reload(tmp_path / "o").config.num_hidden_layers == 3


def test_a_failed_verification_leaves_nothing(tiny_llama_dir, tmp_path, monkeypatch):
    from shortllm.models import checkpoint

    real = checkpoint.write_safetensors
    monkeypatch.setattr(checkpoint, "write_safetensors", lambda path, items, meta: real(path, items[1:], meta))
    result = run_cli("prune", "-m", tiny_llama_dir, "-b", "1", "--out", tmp_path / "o")
    assert_one_line_error(result, "is not what was meant to be written", "is missing")
    assert list(tmp_path.iterdir()) == []


def test_bad_shard_size_is_refused_before_work(tiny_llama_dir, tmp_path):
    assert_one_line_error(run_cli("prune", "-m", tiny_llama_dir, "-b", "1", "--out", tmp_path / "o",
                                  "--max-shard-size", "lots"), "cannot read the shard size 'lots'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["prefix", "missing head", "wrong shape"])
def test_a_source_not_covering_its_architecture_is_refused_before_writing(tiny_llama_dir, tmp_path, monkeypatch,
                                                                         case):
    # As strict as every other load, also for models too big for the logits check (nothing is loaded).
    monkeypatch.setattr(out_of_core, "LOGITS_CHECK_MAX_BYTES", 0)
    src = tmp_path / "src"
    shutil.copytree(tiny_llama_dir, src)
    tensors = load_file(src / WEIGHTS_NAME)
    if case == "prefix":  # as adapter tooling leaves it
        tensors = {"base_model.model." + k: v for k, v in tensors.items()}
    elif case == "missing head":
        del tensors["lm_head.weight"]
    else:
        tensors["model.layers.0.mlp.down_proj.weight"] = torch.zeros(4, 4)
    save_file(tensors, src / WEIGHTS_NAME, metadata={"format": "pt"})
    before = tree_digest(src)
    out = tmp_path / "outputs"
    out.mkdir()
    result = run_cli("prune", "-m", src, "-b", "1", "--out", out / "o")
    assert_one_line_error(result, "do not match its architecture",
                          *(["base_model.model."] if case == "prefix" else []))
    assert list(out.iterdir()) == [] and tree_digest(src) == before
