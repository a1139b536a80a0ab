"""``--optimizer-in-backward``: the optimizer step taken inside the backward pass, one parameter at a time, and
the checks that refuse it where it would be wrong.
"""

from __future__ import annotations

from typing import Any

import torch

from shortllm.training.config import TrainingError


class StepInBackward:
    """The optimizer step taken inside the backward pass, one parameter at a time (``--optimizer-in-backward``).

    A post-accumulate-grad hook on every trained parameter steps the optimizer as soon as that parameter's
    gradient is complete and frees the gradient, so at most one gradient exists at a time: the run holds no
    gradients beside its weights and AdamW moments (4 bytes per trained float32 parameter less at the peak).
    This is PyTorch's "fuse the optimizer step into the backward pass" recipe and torchtune's
    ``optimizer_in_bwd``, with one difference: one optimizer (and so one scheduler and one checkpoint format)
    for all parameters; at each hook only that parameter has a gradient, so ``optimizer.step()`` updates it
    alone.

    What it costs: no gradient clipping (the global norm is known only after every parameter is updated) and no
    gradient accumulation (config.validate refuses ``--grad-accum``); one process only. The global gradient
    norm is still measured, as the parameters go, for the curve and the NaN/inf guard; a non-finite gradient is
    therefore found after the step has been applied, and the run stops as it does otherwise (nothing written to
    ``--out``, checkpoints untouched).
    """

    def __init__(self, optimizer: Any, params: list[torch.nn.Parameter]):
        self.optimizer = optimizer
        self.sq = torch.zeros((), dtype=torch.float32)
        self._handles = [p.register_post_accumulate_grad_hook(self._step) for p in params]

    def _step(self, param: torch.nn.Parameter) -> None:
        norm = torch.linalg.vector_norm(param.grad.detach(), dtype=torch.float32)
        self.sq = self.sq.to(norm.device) + norm * norm
        self.optimizer.step()
        param.grad = None

    def norm(self) -> torch.Tensor:
        """The gradient norm of the step just taken (and reset for the next)."""
        norm, self.sq = self.sq.sqrt(), torch.zeros_like(self.sq)
        return norm


def check_step_in_backward(accelerator: Any) -> None:
    """Refuse ``--optimizer-in-backward`` where a step inside the backward would be wrong: several processes or
    a sharded model (the updates would come before the gradients are averaged or reduce-scattered) and fp16's
    loss scaling (the gradients are still scaled, and an overflow would be applied instead of skipped),
    whether asked for by options or by an ``accelerate launch`` configuration.

    Raises:
        TrainingError: any of these.
    """
    from accelerate.utils import DistributedType

    if accelerator.num_processes > 1 or accelerator.distributed_type != DistributedType.NO:
        raise TrainingError("--optimizer-in-backward runs in one process without sharding (its updates would come "
                            "before the gradients are averaged over processes)", "drop it, or run one process")
    if accelerator.mixed_precision == "fp16":
        raise TrainingError("--optimizer-in-backward cannot be used with fp16's loss scaling",
                            "use --mixed-precision bf16 or no")
