"""The output head of a causal LM as the training loop applies it apart from the model.

The chunked losses (:func:`shortllm.training.objectives.losses.chunked_token_sums`) call the model with ``logits_to_keep``
an empty index tensor (transformers' own "no logits" path) and apply the head to the last hidden state
themselves, a chunk of positions at a time, or (``--kd-support``) at chosen token ids only. The head is the
output embedding plus what the family applies after it (logit softcapping, logit scaling: data below), and it
is checked once against the model's real logits on a few tokens before a run relies on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

# What a family applies to lm_head's output (config key -> kind). "softcap": cap * tanh(logits / cap);
# "divide": logits / value (Granite); "multiply": logits * value (Cohere).
HEAD_TRANSFORMS = {"final_logit_softcapping": "softcap", "logits_soft_cap": "softcap", "logits_scaling": "divide",
                   "logit_scale": "multiply"}


@dataclass
class Head:
    """``[n, H] -> [n, V]``: a model's output head as its forward applies it."""

    module: Any
    scale: float = 1.0
    softcap: float | None = None

    @property
    def rows(self) -> torch.Tensor:
        """The output weight as ``[V, H]``, one row per token (GPT-2's ``Conv1D`` stores it transposed)."""
        weight = self.module.weight
        return weight.t() if type(self.module).__name__ == "Conv1D" else weight

    @property
    def vocab_size(self) -> int:
        return self.rows.shape[0]

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._transform(self.module(hidden))

    def at(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``([n, H], [n, j] token ids) -> [n, j]``: the logits of each position at its own ids only, from the
        gathered rows of the output weight (``[n, j, H]``, differentiable in both), so the cost is ``n * j *
        H`` instead of ``n * V * H``. Equal to ``self(hidden).gather(1, ids)`` up to float summation order."""
        rows = self.rows[ids]
        logits = torch.einsum("nh,njh->nj", hidden.to(rows.dtype), rows)
        bias = getattr(self.module, "bias", None)
        if bias is not None:
            logits = logits + bias[ids]
        return self._transform(logits)

    def _transform(self, logits: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def output_head(model: Any) -> Head | None:
    """The output head of ``model`` (an unwrapped causal LM, peft models included), or None without one."""
    module = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if module is None or getattr(module, "weight", None) is None:
        return None
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    head = Head(module)
    for key, kind in HEAD_TRANSFORMS.items():
        value = getattr(config, key, None)
        if value is None or isinstance(value, bool):
            continue
        if kind == "softcap":
            head.softcap = float(value)
        elif kind == "divide":
            head.scale = 1.0 / float(value)
        else:
            head.scale = float(value)
    return head


def no_logits(device: Any) -> torch.Tensor:
    """The ``logits_to_keep`` that keeps no position: an empty 1-D index tensor."""
    return torch.zeros(0, dtype=torch.long, device=device)


def check_head(model: Any, head: Head | None, device: Any) -> bool:
    """Whether ``head(last hidden state)`` gives ``model``'s logits (to 1e-4, a few tokens, eval mode) and the
    model accepts ``logits_to_keep``: the condition for the chunked loss."""
    if head is None:
        return False
    was_training = model.training
    model.eval()
    try:
        vocab = head.vocab_size
        ids = (torch.arange(1, 9, device=device) % max(vocab - 1, 1)).unsqueeze(0)
        with torch.no_grad():
            full = model(input_ids=ids, use_cache=False).logits
            out = model(input_ids=ids, use_cache=False, output_hidden_states=True, logits_to_keep=no_logits(device))
            if out.logits is not None and out.logits.shape[1] != 0:
                return False
            return bool(torch.allclose(head(out.hidden_states[-1]).float(), full.float(), atol=1e-4, rtol=1e-4))
    except (TypeError, ValueError, RuntimeError, AttributeError, IndexError) as err:
        log.debug("chunked head check failed: %s", err)
        return False
    finally:
        model.train(was_training)


def check_head_at(head: Head, device: Any) -> bool:
    """Whether :meth:`Head.at` gives ``head``'s own logits at chosen ids, on a few random states: false for a
    head whose module computes something else than ``hidden @ weight.T + bias`` (an adapter on it). The
    tolerance is 1e-4 in float32 and scales with the weight's precision (a 16-bit product may round
    differently in the two paths)."""
    rows = head.rows
    eps = torch.finfo(rows.dtype).eps if rows.dtype.is_floating_point else 0.0
    tol = max(1e-4, 16 * eps)
    with torch.no_grad():
        hidden = torch.randn(3, rows.shape[1], generator=torch.Generator().manual_seed(0)).to(device=device,
                                                                                                 dtype=rows.dtype)
        ids = torch.arange(6, device=device).view(3, 2) % head.vocab_size
        try:
            return bool(torch.allclose(head.at(hidden, ids).float(), head(hidden).gather(1, ids).float(),
                                       atol=tol, rtol=tol))
        except (TypeError, ValueError, RuntimeError, AttributeError, IndexError) as err:
            log.debug("head.at check failed: %s", err)
            return False
