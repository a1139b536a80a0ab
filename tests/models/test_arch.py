"""Architecture table, generic block detection and named errors."""

import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig

from shortllm.errors import UnsupportedArchitectureError
from shortllm.models.arch import ARCHITECTURES, blocks_of, check_decoder, num_layers
from tests.tiny_models import ARCHS, tiny_config, tiny_model


def test_table_covers_the_tested_architectures():
    assert set(ARCHS) <= set(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHS)
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
