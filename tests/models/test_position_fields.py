"""Config fields tied to block positions: per-block lists, lists of block indices, and
thresholds / ranges / periods over block positions, rewritten by surgery so that the pruned model computes
what the original computes with the blocks skipped, and reloads with stock transformers doing the same."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from shortllm.errors import BlockSelectionError, UnsupportedArchitectureError
from shortllm.models.arch import ARCHITECTURES, blocks_of
from shortllm.models.config_rewrite import rewrite_config
from shortllm.models.surgery import drop_blocks, keep_blocks
from tests.models.test_surgery import skip_forward_logits
from tests.tiny_models import tiny_config, tiny_inputs, tiny_model

# (arch, blocks dropped, config overrides, config values expected after the cut)
CASES = [
    # qwen2_moe: mlp_only_layers lists dense blocks by index; the even blocks below max_window_layers slide
    ("qwen2_moe", [0], {}, {"mlp_only_layers": [0], "max_window_layers": 0, "decoder_sparse_step": 1}),
    ("qwen2_moe", [1], {}, {"mlp_only_layers": [], "max_window_layers": 1}),
    # an index list as long as the layer count is still an index list, not one entry per block
    ("qwen2_moe", [1], {"mlp_only_layers": [0, 1, 2, 3]}, {"mlp_only_layers": [0, 1, 2]}),
    # MoE on blocks 1 and 3 by period: after removing block 0 no period fits -> explicit mlp_only_layers
    ("qwen2_moe", [0], {"decoder_sparse_step": 2, "mlp_only_layers": []},
     {"decoder_sparse_step": 1, "mlp_only_layers": [1]}),
    ("qwen2_moe", [0, 1], {"decoder_sparse_step": 2, "mlp_only_layers": []},
     {"decoder_sparse_step": 2, "mlp_only_layers": []}),
    ("qwen3_moe", [0], {}, {"mlp_only_layers": [0]}),
    ("qwen3_moe", [2], {"decoder_sparse_step": 2, "mlp_only_layers": []},
     {"decoder_sparse_step": 1, "mlp_only_layers": [0]}),
    ("qwen3_next", [0], {}, {"mlp_only_layers": [1], "layer_types": ["full_attention", "linear_attention",
                                                                    "full_attention"]}),
    ("deepseek_v3", [0], {}, {"first_k_dense_replace": 1, "moe_layer_freq": 1}),
    ("deepseek_v2", [1], {}, {"first_k_dense_replace": 1}),
    ("glm4_moe", [0, 1], {}, {"first_k_dense_replace": 0}),
    ("dots1", [0], {}, {"first_k_dense_replace": 1, "max_window_layers": 1}),
    # MoE on (i + 1) % 2 == 0 from block 1 through block 3
    ("ernie4_5_moe", [1], {},
     {"moe_layer_start_index": 1, "moe_layer_end_index": 2, "moe_layer_interval": 3}),
    ("ernie4_5_moe", [0, 1], {},
     {"moe_layer_start_index": 0, "moe_layer_end_index": 1, "moe_layer_interval": 2}),
    ("llama4_text", [0, 1], {},
     {"moe_layers": [1], "no_rope_layers": [1, 0], "interleave_moe_layer_step": 2}),
    ("llama4_text", [1], {}, {"moe_layers": [2], "no_rope_layers": [1, 1, 0], "interleave_moe_layer_step": 3,
                              "no_rope_layer_interval": 3}),
    ("afmoe", [0], {}, {"num_dense_layers": 0, "global_attn_every_n_layers": None}),
    ("afmoe", [1], {}, {"num_dense_layers": 1, "global_attn_every_n_layers": 3}),
    ("lfm2", [1], {}, {"full_attn_idxs": [2]}),
    ("lfm2_moe", [0], {}, {"num_dense_layers": 1}),
    ("jamba", [0], {}, {"attn_layer_period": 2, "attn_layer_offset": 0, "expert_layer_offset": 0}),
    ("jamba", [1], {}, {"attn_layer_period": 3, "attn_layer_offset": 2, "expert_layer_period": 3}),
    ("bamba", [1], {}, {"attn_layer_indices": [2]}),
    ("recurrent_gemma", [0], {}, {"block_types": ["attention", "recurrent"]}),
    ("recurrent_gemma", [1], {}, {"block_types": ["recurrent", "recurrent", "attention"]}),
    ("exaone4", [0], {}, {"sliding_window_pattern": None}),
    ("exaone4", [0, 1], {}, {"sliding_window_pattern": 2}),
    ("gemma3_text", [1], {"sliding_window_pattern": 2}, {"sliding_window_pattern": 3}),
    ("modernbert-decoder", [1], {}, {"global_attn_every_n_layers": None}),
    ("modernbert-decoder", [3], {}, {"global_attn_every_n_layers": 2}),
    ("smollm3", [0, 1], {}, {"no_rope_layer_interval": 2, "no_rope_layers": [1, 0]}),
    # SmolLM3 hub configs also carry Qwen2's max_window_layers
    ("smollm3", [1], {"max_window_layers": 4}, {"no_rope_layer_interval": 3, "max_window_layers": 3}),
    ("gpt_neo", [1], {}, {"attention_types": [[["global", "global", "local"], 1]],
                          "attention_layers": ["global", "global", "local"]}),
    ("gpt_neo", [0, 1], {}, {"attention_types": [[["global", "local"], 1]]}),
    ("qwen2", [0], {"max_window_layers": 2, "layer_types": None},
     {"max_window_layers": 1, "layer_types": ["full_attention", "sliding_attention", "sliding_attention"]}),
    ("hunyuan_v1_moe", [1], {}, {"moe_topk": [2, 2, 1]}),
    *[(arch, [1], {}, {})
      for arch in ("mixtral", "olmoe", "granitemoe", "minimax", "gpt_oss", "cohere2", "olmo3")],
]


def _case_id(case):
    arch, drop, overrides, _ = case
    shown = ",".join(f"{k}={v}" for k, v in overrides.items())
    return f"{arch}-drop{drop}" + (f"-{shown}" if shown else "")


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_pruned_model_reloads_and_equals_skip_forward(case, tmp_path):
    arch, drop, overrides, expected = case
    model = tiny_model(arch, **overrides)
    ids = tiny_inputs(model.config)
    reference = skip_forward_logits(model, ids, drop)
    drop_blocks(model, drop)
    with torch.no_grad():
        pruned = model(ids, use_cache=False).logits
    torch.testing.assert_close(pruned, reference, atol=1e-5, rtol=0)
    for name, value in expected.items():
        assert getattr(model.config, name) == value, name

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert len(blocks_of(reloaded).layers) == 4 - len(drop)
    with torch.no_grad():
        again = reloaded(ids, use_cache=False).logits
    torch.testing.assert_close(again, pruned, atol=1e-5, rtol=0)
    saved = json.loads((tmp_path / "config.json").read_text())
    for name, value in expected.items():
        assert saved[name] == value, name


# Fields that only seed a per-block list (the list is what transformers reads): after the cut, building the
# config again without the list must derive the same list from the rewritten field (transformers' own rule).
SEEDS = [
    ("qwen2", [0], {"max_window_layers": 2, "layer_types": None}, "layer_types"),
    ("qwen2_moe", [0], {}, "layer_types"),
    ("qwen2_moe", [1], {}, "layer_types"),
    ("dots1", [0], {}, "layer_types"),
    ("llama4_text", [3], {}, "moe_layers"),
    ("llama4_text", [1], {}, "no_rope_layers"),
    ("smollm3", [1], {}, "no_rope_layers"),
    ("gemma3_text", [1], {"sliding_window_pattern": 2}, "layer_types"),
    ("exaone4", [0, 1], {}, "layer_types"),
    ("afmoe", [1], {}, "layer_types"),
    ("modernbert-decoder", [3], {}, "layer_types"),
    ("lfm2", [1], {}, "layer_types"),
    ("gpt_neo", [1], {}, "attention_layers"),
]


@pytest.mark.parametrize("arch, drop, overrides, listed", SEEDS, ids=[f"{s[0]}-{s[1]}-{s[3]}" for s in SEEDS])
def test_seed_fields_derive_the_kept_list(arch, drop, overrides, listed):
    config = tiny_config(arch, **overrides)
    keep = [i for i in range(4) if i not in drop]
    rewrite_config(config, keep)
    values = config.to_dict()
    kept = values.pop(listed)
    rebuilt = type(config).from_dict(values)
    assert getattr(rebuilt, listed) == kept


REFUSED = [
    ("ernie4_5_moe", [0], "moe_layer_interval=2"),
    ("llama4_text", [0], "interleave_moe_layer_step=2"),
    ("smollm3", [0], "no_rope_layer_interval=2"),
    ("jamba", [2], "attn_layer_period=2"),
]


@pytest.mark.parametrize("arch, drop, field", REFUSED, ids=[r[0] for r in REFUSED])
def test_cut_a_period_cannot_state_is_refused_by_name(arch, drop, field):
    model = tiny_model(arch)
    before = model.config.to_dict()
    with pytest.raises(BlockSelectionError) as err:
        drop_blocks(model, drop)
    line = err.value.one_line()
    assert field in line and f"removing blocks {drop}" in line
    assert "runs of 2 consecutive blocks" in line
    assert len(blocks_of(model).layers) == 4 and model.config.to_dict() == before  # nothing changed
    drop_blocks(model, [0, 1])  # a whole period: allowed
    assert len(blocks_of(model).layers) == 2


def test_removing_a_first_block_built_differently_is_refused():
    model = tiny_model("modernbert-decoder")  # block 0 has no attention norm
    with pytest.raises(BlockSelectionError, match="block 0"):
        drop_blocks(model, [0])
    assert len(blocks_of(model).layers) == 4


def test_unknown_family_with_position_fields_is_refused():
    model = tiny_model("qwen2_moe")
    model.config.model_type = "mystery-moe"  # generic detection finds the blocks, but not the fields' meaning
    with pytest.raises(UnsupportedArchitectureError) as err:
        drop_blocks(model, [0])
    assert "mystery-moe" in err.value.message and "mlp_only_layers=[1]" in err.value.message
    assert "max_window_layers=2" in err.value.message
    assert len(blocks_of(model).layers) == 4


@pytest.mark.parametrize("arch, drop", [("qwen2_moe", [0]), ("ernie4_5_moe", [1]), ("gpt_neo", [1])])
def test_rewrite_config_alone_matches_model_surgery(arch, drop):
    config = tiny_config(arch)
    keep = [i for i in range(4) if i not in drop]
    changed = rewrite_config(config, keep)
    model = tiny_model(arch)
    keep_blocks(model, keep)
    assert config.to_dict() == model.config.to_dict()
    assert {"shortllm", ARCHITECTURES[arch].layer_count_key} <= set(changed)


def test_rewrite_config_reports_the_fields_it_changed():
    config = tiny_config("qwen2_moe", decoder_sparse_step=2, mlp_only_layers=[])
    changed = rewrite_config(config, [1, 2, 3])
    assert set(changed) == {"num_hidden_layers", "layer_types", "mlp_only_layers", "decoder_sparse_step",
                            "max_window_layers", "shortllm"}



