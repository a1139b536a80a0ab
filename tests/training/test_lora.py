"""LoRA targets come from the architecture: every attention and MLP projection, nothing else."""

from __future__ import annotations

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from shortllm.errors import UnsupportedArchitectureError
from shortllm.models.arch import PROJECTIONS, blocks_of
from shortllm.training.lora import apply_lora, block_projections, merge, target_modules
from tests.tiny_models import ARCHS, tiny_inputs, tiny_model


@pytest.mark.parametrize("arch", ARCHS)
def test_targets_are_every_linear_layer_of_the_blocks(arch):
    model = tiny_model(arch, num_layers=2)
    assert arch in PROJECTIONS
    blocks = blocks_of(model).layers
    linear = sum(isinstance(m, (torch.nn.Linear, Conv1D)) for m in blocks.modules())
    found = block_projections(model)
    assert len(found) == linear
    assert not any("lm_head" in n or "embed" in n for n in found)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "phi3", "opt"])
def test_merged_adapter_computes_what_the_adapter_computes(arch):
    model = tiny_model(arch, num_layers=2)
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # B starts at zero; make the adapter do something
    ids = tiny_inputs(model.config)
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(ids, use_cache=False).logits
        merged = merge(peft_model)(ids, use_cache=False).logits
    assert (adapted - merged).abs().max() < 1e-4


def test_explicit_targets_must_exist():
    model = tiny_model("llama", num_layers=2)
    assert target_modules(model, ("q_proj", "v_proj")) == ["q_proj", "v_proj"]
    with pytest.raises(UnsupportedArchitectureError, match="c_attn"):
        target_modules(model, ("q_proj", "c_attn"))
