"""Architecture table, generic block detection and named errors."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, BertConfig

from shortllm.errors import UnsupportedArchitectureError
from shortllm.models.arch import ARCHITECTURES, blocks_of, check_decoder, num_layers
from tests.conftest import run_cli
from tests.tiny_models import ARCHS, POSITION_ARCHS, tiny_config, tiny_model


def test_table_covers_the_tested_architectures():
    assert set(ARCHS + POSITION_ARCHS) <= set(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHS + POSITION_ARCHS)
def test_table_path_is_the_block_list(arch):
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(tiny_config(arch, num_layers=3))
    blocks = blocks_of(model)
    assert len(blocks.layers) == 3 == num_layers(model.config)
    assert getattr(blocks.parent, blocks.attr) is blocks.layers


def test_generic_detection_for_unknown_type():
    model = tiny_model("llama", num_layers=3)
    model.config.model_type = "mystery-decoder"  # not in the table: found by the ModuleList of length 3
    blocks = blocks_of(model)
    assert blocks.layers is model.model.layers


def test_generic_detection_failure_names_supported_types():
    model = tiny_model("llama", num_layers=3)
    model.config.model_type = "mystery-decoder"
    model.config.num_hidden_layers = 7  # no ModuleList of that length
    with pytest.raises(UnsupportedArchitectureError) as err:
        blocks_of(model)
    assert "mystery-decoder" in err.value.one_line()
    assert "supported types:" in err.value.one_line().lower() and "llama" in err.value.hint


def test_encoder_only_refused():
    with pytest.raises(UnsupportedArchitectureError, match="encoder-only"):
        check_decoder(BertConfig())


# Multimodal checkpoints the table does not describe: refused, naming where the language
# model's blocks are. Those it describes (gemma3, llava, mistral3, qwen2_5_vl, llama4, ...) are pruned:
# tests/models/test_multimodal.py.
MULTIMODAL = [
    ("paligemma", "gemma", "vision_config (vision tower)"),
    ("idefics3", "llama", "vision_config (vision tower)"),
    ("qwen2_audio", "qwen2", "audio_config (audio encoder)"),
]


@pytest.mark.parametrize("model_type, text_type, tower", MULTIMODAL, ids=[m[0] for m in MULTIMODAL])
def test_multimodal_refused_naming_the_nesting(model_type, text_type, tower):
    config = AutoConfig.for_model(model_type, text_config={"num_hidden_layers": 3})
    for check in (check_decoder, num_layers):  # num_layers used to say "cannot find the layer count"
        with pytest.raises(UnsupportedArchitectureError) as err:
            check(config)
        line = err.value.one_line()
        assert (f"model type '{model_type}' is a multimodal model: its language model's 3 blocks are under "
                f"text_config (language model, type '{text_type}') beside a") in line
        assert tower in line and "text-only decoder models" in line
        assert (f"use a '{text_type}' (text-only) checkpoint" in line) == (text_type in ARCHITECTURES)


def test_multimodal_refused_by_inspect_in_one_line(tmp_path):
    AutoConfig.for_model("paligemma", text_config={"num_hidden_layers": 3}).save_pretrained(tmp_path)
    result = run_cli("inspect", "-m", tmp_path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'paligemma' is a multimodal model" in lines[0], result.stderr
    assert "use a 'gemma' (text-only) checkpoint" in lines[0]


def test_text_only_configs_are_not_multimodal():
    for arch in ARCHS:
        check_decoder(tiny_config(arch))
    check_decoder(AutoConfig.for_model("gemma3_text", num_hidden_layers=3))
