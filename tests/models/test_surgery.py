"""Block surgery invariants (DESIGN.md) on tiny random models of every architecture in the table."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from shortllm.errors import BlockSelectionError
from shortllm.models.arch import blocks_of
from shortllm.models.params import count_params
from shortllm.models.surgery import drop_blocks, keep_blocks
from tests.tiny_models import ARCHS, CACHE_ARCHS, tiny_inputs, tiny_model

DROPS = [[1], [0, 2]]


def skip_forward_logits(model, ids, skip):
    """Logits of the untouched model with blocks ``skip`` bypassed by hooks (the reference)."""

    def bypass(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    layers = blocks_of(model).layers
    handles = [layers[i].register_forward_hook(bypass, with_kwargs=True) for i in skip]
    try:
        with torch.no_grad():
            return model(ids, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("drop", DROPS, ids=str)
@pytest.mark.parametrize("arch", ARCHS)
def test_drop_equals_skip_forward(arch, drop):
    model = tiny_model(arch)
    ids = tiny_inputs(model.config)
    expected = skip_forward_logits(model, ids, drop)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
    drop_blocks(model, drop)
    with torch.no_grad():
        got = model(ids, use_cache=False).logits
    assert not torch.allclose(full, expected, atol=1e-3)  # the dropped blocks mattered
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert len(blocks_of(model).layers) == 4 - len(drop)


@pytest.mark.parametrize("arch", ARCHS + CACHE_ARCHS)
def test_generate_with_cache_after_drop(arch):
    model = tiny_model(arch)
    drop_blocks(model, [1])
    ids = tiny_inputs(model.config, batch=1, seq=12)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, min_new_tokens=6)
    with torch.no_grad():
        cached = model.generate(ids, use_cache=True, **kw)
        uncached = model.generate(ids, use_cache=False, **kw)
    assert cached.shape[1] == ids.shape[1] + 6
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_reload_identical(arch, tmp_path):
    model = tiny_model(arch)
    drop_blocks(model, [0, 2])
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = tiny_inputs(model.config)
    with torch.no_grad():
        a = model(ids, use_cache=False).logits
        b = reloaded(ids, use_cache=False).logits
    assert torch.equal(a, b)
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert cfg.num_hidden_layers == 2
    assert cfg.shortllm == {"original_num_blocks": 4, "kept_blocks": [1, 3]}
    assert len(blocks_of(reloaded).layers) == 2


@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text", "qwen2", "qwen3"])
def test_layer_types_follow_their_blocks(arch, tmp_path):
    model = tiny_model(arch)
    before = list(model.config.layer_types)
    assert before == ["sliding_attention", "full_attention"] * 2
    drop_blocks(model, [0])
    assert model.config.layer_types == before[1:]
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).layer_types == before[1:]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "opt"])
def test_layer_idx_renumbered(arch):
    model = tiny_model(arch)
    drop_blocks(model, [0, 1])
    for new_index, block in enumerate(blocks_of(model).layers):
        found = [m.layer_idx for m in block.modules() if isinstance(getattr(m, "layer_idx", None), int)]
        assert found and set(found) == {new_index}


def test_provenance_composes_over_two_prunes():
    model = tiny_model("llama", num_layers=6)
    drop_blocks(model, [1, 4])  # keeps 0, 2, 3, 5
    drop_blocks(model, [0])  # current 0 = original 0
    assert model.config.shortllm == {"original_num_blocks": 6, "kept_blocks": [2, 3, 5]}


def test_keep_blocks_is_drop_complement():
    a, b = tiny_model("qwen2"), tiny_model("qwen2")
    keep_blocks(a, [1, 3])
    drop_blocks(b, [0, 2])
    ids = tiny_inputs(a.config)
    with torch.no_grad():
        assert torch.equal(a(ids, use_cache=False).logits, b(ids, use_cache=False).logits)


@pytest.mark.parametrize("bad", [[4], [-1], [1, 1], [0, 1, 2, 3], ["1"]])
def test_bad_indices_refused_and_model_untouched(bad):
    model = tiny_model("llama")
    with pytest.raises(BlockSelectionError):
        drop_blocks(model, bad)
    assert len(blocks_of(model).layers) == 4 and model.config.num_hidden_layers == 4


def test_gpt2_inverse_layer_scale_refused_unless_trailing():
    model = tiny_model("gpt2")
    model.config.scale_attn_by_inverse_layer_idx = True
    with pytest.raises(BlockSelectionError, match="trailing"):
        drop_blocks(model, [1])
    drop_blocks(model, [3])  # nothing moves: allowed
    assert len(blocks_of(model).layers) == 3


@pytest.mark.parametrize("arch", ARCHS)
def test_count_params(arch):
    model = tiny_model(arch)
    counts = count_params(model)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.per_block == [sum(p.numel() for p in b.parameters()) for b in blocks_of(model).layers]
    assert counts.head == (0 if model.config.tie_word_embeddings else model.get_output_embeddings().weight.numel())
    drop_blocks(model, [1])
    assert count_params(model).total == counts.total - counts.per_block[1]
