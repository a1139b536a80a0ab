"""Pruning the language model of multimodal checkpoints: the block surgery invariants of
DESIGN.md on tiny random Gemma 3, Mistral 3, LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, Qwen3-VL(-MoE) and
Llama 4 checkpoints, the vision tower untouched; then `shortllm score` / `prune --ratio` on a Gemma 3."""

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForImageTextToText
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from shortllm.errors import UnsupportedArchitectureError
from shortllm.models.arch import (
    ARCHITECTURES,
    auto_class,
    block_key_prefixes,
    blocks_of,
    check_decoder,
    language_config,
    multimodal_types,
    num_layers,
)
from shortllm.models.config_rewrite import rewrite_config
from shortllm.models.params import count_params
from shortllm.models.surgery import drop_blocks
from tests.conftest import run_cli, tree_digest
from tests.tiny_models import (
    MULTIMODAL_ARCHS,
    _multimodal_kwargs,
    tiny_inputs,
    tiny_multimodal_config,
    tiny_multimodal_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def text_model(model):
    """The module that runs the text-only path (token ids, no pixels): the checkpoint class itself, except
    Llama 4, whose Llama4ForConditionalGeneration.forward raises AttributeError (``image_outputs``) in
    transformers 5.24, so its language model (a Llama4ForCausalLM sharing the same blocks) runs it."""
    return model.language_model if model.config.model_type == "llama4" else model


def text_logits(model, ids):
    with torch.no_grad():
        return text_model(model)(ids, use_cache=False).logits


def skip_forward_logits(model, ids, skip):
    """Logits of the untouched model with language blocks ``skip`` bypassed by hooks (the reference)."""

    def bypass(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    layers = blocks_of(model).layers
    handles = [layers[i].register_forward_hook(bypass, with_kwargs=True) for i in skip]
    try:
        return text_logits(model, ids)
    finally:
        for h in handles:
            h.remove()


def saved_tensors(folder):
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def test_table_lists_the_tested_families():
    assert set(MULTIMODAL_ARCHS) == set(multimodal_types())
    for arch in MULTIMODAL_ARCHS:
        assert ARCHITECTURES[arch].auto_class == "AutoModelForImageTextToText"
        assert arch in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


@pytest.mark.parametrize("arch", MULTIMODAL_ARCHS)
def test_row_finds_the_language_blocks(arch):
    config = tiny_multimodal_config(arch, num_layers=3)
    with torch.device("meta"):
        model = auto_class(config).from_config(config)
    assert type(model).__name__ == MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[arch]
    blocks = blocks_of(model)
    assert len(blocks.layers) == 3 == num_layers(config) == language_config(config).num_hidden_layers
    language_params = {id(p) for p in blocks.layers.parameters()}
    vision = next(m for name, m in model.named_modules() if name.split(".")[-1] in ("vision_tower", "visual",
                                                                                  "vision_model"))
    assert not language_params & {id(p) for p in vision.parameters()}
    counts = count_params(model)
    assert counts.total == sum(p.numel() for p in model.parameters())  # the whole model, vision included
    assert counts.outside_language_model >= sum(p.numel() for p in vision.parameters()) > 0


@pytest.mark.parametrize("drop", [[1], [0, 2]], ids=str)
@pytest.mark.parametrize("arch", MULTIMODAL_ARCHS)
def test_drop_equals_skip_forward_and_generates(arch, drop):
    model = tiny_multimodal_model(arch)
    ids = tiny_inputs(model.config.get_text_config())
    expected = skip_forward_logits(model, ids, drop)
    assert not torch.allclose(text_logits(model, ids), expected, atol=1e-3)  # the dropped blocks mattered
    drop_blocks(model, drop)
    torch.testing.assert_close(text_logits(model, ids), expected, atol=1e-5, rtol=0)
    attention_indices = [m.layer_idx for m in blocks_of(model).layers.modules() if hasattr(m, "layer_idx")]
    assert sorted(set(attention_indices)) == list(range(4 - len(drop)))

    lm = text_model(model)
    kw = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = lm.generate(ids[:1, :10], use_cache=True, **kw)
        uncached = lm.generate(ids[:1, :10], use_cache=False, **kw)
    assert cached.shape[1] == 15 and torch.equal(cached, uncached)


@pytest.mark.parametrize("arch", MULTIMODAL_ARCHS)
def test_config_rewrite_touches_the_text_config_only(arch):
    config = tiny_multimodal_config(arch)
    before = config.to_dict()
    text_before = before["text_config"]
    changed = rewrite_config(config, [0, 3])
    after = config.to_dict()
    assert after["vision_config"] == before["vision_config"]
    assert {k: v for k, v in after.items() if k not in ("text_config", "shortllm")} == {
        k: v for k, v in before.items() if k != "text_config"}
    assert config.shortllm == {"original_num_blocks": 4, "kept_blocks": [0, 3]}
    text = after["text_config"]
    assert text["num_hidden_layers"] == 2 and "text_config.num_hidden_layers" in changed
    for key, value in text_before.items():  # every per-block list filtered to the kept blocks
        if isinstance(value, list) and len(value) == 4 and key != "mrope_section":
            assert text[key] == [value[0], value[3]], key
    assert all(name.startswith("text_config.") or name == "shortllm" for name in changed)


def test_provenance_counts_original_blocks_across_two_cuts():
    config = tiny_multimodal_config("gemma3")
    rewrite_config(config, [0, 2, 3])
    rewrite_config(config, [1, 2])
    assert config.shortllm == {"original_num_blocks": 4, "kept_blocks": [2, 3]}
    assert config.text_config.layer_types == ["sliding_attention", "full_attention"]


@pytest.mark.parametrize("text_type", ["ministral", "ministral3"])
def test_mistral3_language_models_of_other_types(text_type):
    kwargs = _multimodal_kwargs("mistral3", 4)
    layer_types = ["sliding_attention", "full_attention"] * 2 if text_type == "ministral" else None
    kwargs["text_config"] |= {"model_type": text_type, "layer_types": layer_types}
    config = AutoConfig.for_model("mistral3", **kwargs)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, attn_implementation="eager").eval()
    ids = tiny_inputs(config.text_config)
    expected = skip_forward_logits(model, ids, [1])
    drop_blocks(model, [1])
    torch.testing.assert_close(text_logits(model, ids), expected, atol=1e-5, rtol=0)
    assert config.text_config.num_hidden_layers == 3
    assert getattr(config.text_config, "layer_types", None) == (layer_types and [layer_types[i] for i in (0, 2, 3)])


def test_position_fields_of_the_text_config_follow_their_blocks():
    config = tiny_multimodal_config("qwen2_5_vl")  # blocks 0-1 full attention, 2-3 sliding
    rewrite_config(config, [1, 2, 3])
    assert config.text_config.max_window_layers == 1
    assert config.text_config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    moe = tiny_multimodal_config("qwen3_vl_moe")  # dense MLP on block 1 only
    rewrite_config(moe, [0, 1, 3])
    assert moe.text_config.mlp_only_layers == [1]


@pytest.mark.parametrize("arch", MULTIMODAL_ARCHS)
def test_save_reload_with_stock_class(arch, tmp_path):
    model = tiny_multimodal_model(arch)
    model.save_pretrained(tmp_path / "src")
    drop_blocks(model, [0, 2])
    model.save_pretrained(tmp_path / "short")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "short", attn_implementation="eager").eval()
    assert type(reloaded) is type(model)
    ids = tiny_inputs(model.config.get_text_config())
    assert torch.equal(text_logits(reloaded, ids), text_logits(model, ids))
    assert len(blocks_of(reloaded).layers) == 2
    config = AutoConfig.from_pretrained(tmp_path / "short")
    assert config.text_config.num_hidden_layers == 2
    assert config.shortllm == {"original_num_blocks": 4, "kept_blocks": [1, 3]}
    src_json = json.loads((tmp_path / "src" / "config.json").read_text())
    short_json = json.loads((tmp_path / "short" / "config.json").read_text())
    assert short_json["vision_config"] == src_json["vision_config"]
    assert short_json["architectures"] == src_json["architectures"]

    # Tensors: blocks 1 and 3 renamed 0 and 1 under the table's checkpoint prefix, everything else (vision
    # tower, projector, embeddings, norms, head) byte-identical to the source checkpoint's.
    prefix = block_key_prefixes(model.config)[0]
    src, short = saved_tensors(tmp_path / "src"), saved_tensors(tmp_path / "short")
    in_blocks = [name for name in src if name.startswith(prefix + ".")]
    assert {name.split(".")[len(prefix.split("."))] for name in in_blocks} == {"0", "1", "2", "3"}
    expected = {name: t for name, t in src.items() if name not in in_blocks}
    for name in in_blocks:
        index, rest = name[len(prefix) + 1:].split(".", 1)
        if index in ("1", "3"):
            expected[f"{prefix}.{(int(index) - 1) // 2}.{rest}"] = src[name]
    assert short.keys() == expected.keys()
    assert all(torch.equal(short[name], expected[name]) for name in expected)


# Still refused: multimodal layouts the table does not describe, named precisely.
REFUSED = [
    ("qwen2_audio", {"text_config": {"num_hidden_layers": 3}}, "text_config (language model, type 'qwen2') beside "
                                                               "an audio_config (audio encoder)"),
    ("qwen2_5_omni", {"thinker_config": {"text_config": {"num_hidden_layers": 3}}}, "thinker_config"),
    ("paligemma", {"text_config": {"num_hidden_layers": 3}}, "beside a vision_config (vision tower)"),
]


@pytest.mark.parametrize("model_type, kwargs, where", REFUSED, ids=[r[0] for r in REFUSED])
def test_other_multimodal_types_refused_by_name(model_type, kwargs, where):
    config = AutoConfig.for_model(model_type, **kwargs)
    with pytest.raises(UnsupportedArchitectureError) as err:
        check_decoder(config)
    line = err.value.one_line()
    assert f"model type '{model_type}' is a multimodal model" in line and where in line
    assert "the language model of the multimodal types gemma3, llama4, llava" in line


def test_missing_text_config_refused():
    config = tiny_multimodal_config("gemma3")
    del config.text_config
    with pytest.raises(UnsupportedArchitectureError, match="has no text_config with a layer count"):
        check_decoder(config)


@pytest.fixture(scope="module")
def tiny_gemma3_dir(tmp_path_factory, demo_dir):
    """A tiny random Gemma3ForConditionalGeneration (4 language blocks, 2 vision blocks) with the embedded
    model's tokenizer, saved as a Hugging Face directory."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tiny-gemma3")
    tok = AutoTokenizer.from_pretrained(demo_dir)
    config = tiny_multimodal_config("gemma3")
    config.text_config.vocab_size = len(tok)
    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


FAST = ["--samples", "2", "--seq-len", "32", "--device", "cpu"]


@pytest.mark.parametrize("criterion", ["ppl", "bi", "magnitude"])
def test_score_runs_the_text_path(tiny_gemma3_dir, tmp_path, criterion):
    sizes = FAST if criterion != "magnitude" else FAST[-2:]  # magnitude reads no calibration text
    result = run_cli("score", "-m", tiny_gemma3_dir, "-c", criterion, "-k", "1", "--out", tmp_path / "s", *sizes)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s" / "scores.json").read_text())
    assert report["num_blocks"] == 4 and len(report["scores"]) == 4
    assert all(isinstance(s, float) and s == s for s in report["scores"])


def test_prune_ratio_writes_the_same_class(tiny_gemma3_dir, tmp_path):
    before = tree_digest(tiny_gemma3_dir)
    out = tmp_path / "short"
    result = run_cli("prune", "-m", tiny_gemma3_dir, "--ratio", "0.02", "-c", "bi", "--out", out, "--json",
                     *FAST)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["num_blocks_after"] == 3 and info["reload_max_diff"] == 0.0
    source = AutoModelForImageTextToText.from_pretrained(tiny_gemma3_dir)
    counts = count_params(source)
    assert info["params_before"] == counts.total == sum(p.numel() for p in source.parameters())
    assert info["params_before"] - info["params_after"] == counts.per_block[info["removed"][0]]
    assert info["achieved_ratio"] <= 0.02
    assert info["params_outside_language_model"] == counts.outside_language_model > 0  # vision + projector
    manifest = json.loads((out / "shortllm.json").read_text())
    assert manifest["results"]["params_outside_language_model"] == counts.outside_language_model
    assert tree_digest(tiny_gemma3_dir) == before

    pruned = AutoModelForImageTextToText.from_pretrained(out)
    assert type(pruned).__name__ == "Gemma3ForConditionalGeneration"
    assert pruned.config.text_config.num_hidden_layers == 3
    assert pruned.config.text_config.layer_types == [
        source.config.text_config.layer_types[i] for i in info["kept_original"]]
    assert pruned.config.vision_config.to_dict() == source.config.vision_config.to_dict()
    vision = dict(source.model.vision_tower.named_parameters())
    assert all(torch.equal(p, vision[n]) for n, p in pruned.model.vision_tower.named_parameters())


def test_load_model_loads_the_whole_checkpoint_class(tmp_path):
    from shortllm.models.loading import LoadSettings, load_model

    model = tiny_multimodal_model("qwen2_5_vl")
    model.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), LoadSettings(device="cpu", dtype="float32"))
    assert type(loaded.model) is type(model)
    assert all(torch.equal(p, dict(model.named_parameters())[n]) for n, p in loaded.model.named_parameters())


def test_load_model_refuses_a_class_whose_text_path_fails(tmp_path, monkeypatch):
    from shortllm.models.loading import LoadSettings, load_model

    tiny_multimodal_model("gemma3").save_pretrained(tmp_path)
    cls = type(tiny_multimodal_model("gemma3", num_layers=1))

    def broken(self, *args, **kwargs):
        raise AttributeError("'CausalLMOutputWithPast' object has no attribute 'image_outputs'")

    monkeypatch.setattr(cls, "forward", broken)
    with pytest.raises(UnsupportedArchitectureError) as err:
        load_model(str(tmp_path), LoadSettings(device="cpu"))
    assert "Gemma3ForConditionalGeneration cannot run text-only in transformers" in err.value.one_line()
    assert "image_outputs" in err.value.one_line()


def test_prune_in_memory_keeps_the_processor(tmp_path, demo_dir):
    from transformers import AutoProcessor, AutoTokenizer, CLIPImageProcessor, LlavaProcessor

    tok = AutoTokenizer.from_pretrained(demo_dir)
    config = tiny_multimodal_config("llava")
    config.text_config.vocab_size = len(tok)
    AutoModelForImageTextToText.from_config(config).save_pretrained(tmp_path / "src")
    image = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    LlavaProcessor(image_processor=image, tokenizer=tok, patch_size=14).save_pretrained(tmp_path / "src")
    result = run_cli("prune", "-m", tmp_path / "src", "--num-blocks", "1", "-c", "bi", "--out", tmp_path / "out",
                     "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["surgery"] == "in-memory"  # scoring loaded the model: cut there
    assert (tmp_path / "out" / "processor_config.json").is_file()
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    assert isinstance(processor, LlavaProcessor) and processor.tokenizer("a b").input_ids == tok("a b").input_ids
