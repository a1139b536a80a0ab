"""LoRA through peft, with targets that follow the architecture: every attention and MLP projection.

The projection names are data, per Hugging Face ``model_type`` (``PROJECTIONS`` in ``models/arch.py``).
An architecture missing from the table falls back to every ``nn.Linear`` / GPT-2 ``Conv1D`` inside the
transformer blocks, which is the same set for every family listed here.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from shortllm.errors import UnsupportedArchitectureError
from shortllm.models.arch import PROJECTIONS, blocks_of

log = logging.getLogger(__name__)

def _linear_types() -> tuple[type, ...]:
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def block_projections(model: Any) -> list[str]:
    """Full module names of the LoRA targets of ``model``: the table's projections inside the blocks.

    Raises:
        UnsupportedArchitectureError: no projection found (blocks without linear layers).
    """
    blocks = blocks_of(model)
    prefix = next(name for name, module in model.named_modules() if module is blocks.layers)
    names = PROJECTIONS.get(getattr(model.config, "model_type", ""))
    linear = _linear_types()
    found = []
    for name, module in blocks.layers.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, linear) and (names is None or leaf in names):
            found.append(f"{prefix}.{name}")
    if not found:
        raise UnsupportedArchitectureError(
            f"found no attention or MLP projections to adapt in '{model.config.model_type}' blocks",
            "name them with --lora-targets, or use --method cpt",
        )
    return found


def target_modules(model: Any, explicit: tuple[str, ...] | None = None) -> list[str]:
    """peft ``target_modules``: leaf names when they occur only inside the blocks, else full module names.

    Raises:
        UnsupportedArchitectureError: an explicit name that matches no linear layer.
    """
    if explicit:
        linear = _linear_types()
        leaves = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, linear)}
        missing = [t for t in explicit if t not in leaves]
        if missing:
            raise UnsupportedArchitectureError(
                f"--lora-targets {', '.join(missing)} match no linear layer of this model",
                f"linear layers here: {', '.join(sorted(leaves))}",
            )
        return list(explicit)
    full = block_projections(model)
    leaves = sorted({n.rsplit(".", 1)[-1] for n in full})
    everywhere = [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] in leaves]
    return leaves if sorted(everywhere) == sorted(full) else full


def apply_lora(model: Any, r: int, alpha: int, dropout: float, targets: tuple[str, ...] | None = None) -> Any:
    """Wrap ``model`` in a peft LoRA model (base weights frozen). Returns the peft model."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    modules = target_modules(model, targets)
    fan_in_fan_out = any(isinstance(m, Conv1D) for m in model.modules())  # GPT-2 stores weights transposed
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, bias="none",
                        task_type="CAUSAL_LM", fan_in_fan_out=fan_in_fan_out,
                        # peft's defaults, stated so a release cannot change the adapter's start or scale:
                        # B = 0 (the model is unchanged at step 0) and scaling alpha / r.
                        init_lora_weights=True, use_rslora=False, use_dora=False)
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    log.info("LoRA r=%d alpha=%d on %s: %d trainable parameters", r, alpha, ", ".join(modules[:8]), trainable)
    return peft_model


def merge(peft_model: Any) -> Any:
    """Fold the adapter into the base weights; returns the plain transformers model."""
    return peft_model.merge_and_unload()
