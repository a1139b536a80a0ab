"""Plumbing for the criteria: block inputs from one full pass, and passes that start from a cached input.

Criteria never touch hooks themselves. This module runs the model so that the model's own forward
supplies every per-block argument (attention masks per layer type, rotary embeddings, embedding scaling,
final norm, logit scaling or soft-capping): blocks are *bypassed* by temporarily replacing their
``forward`` on the instance, never by copying or rebuilding the model.

To evaluate "the model without blocks S" starting from block ``i``'s cached input ``X_i``, blocks
``0..i`` are bypassed with block ``i`` returning ``X_i``, blocks in ``S`` after ``i`` return their input,
and the others run normally. The cost is the tail ``i+1..n-1`` plus embeddings and head.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from shortllm.models.arch import blocks_of


def _hidden_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _as_output(hidden: torch.Tensor, template: Any) -> Any:
    # Blocks of transformers 5 return a tensor; older or custom blocks return (hidden, *extras).
    if isinstance(template, tuple):
        return (hidden, *template[1:])
    return hidden


_TEMPLATES: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def block_template(model: Any) -> Any:
    """An output of the model's last block (from a 2-token probe, cached per model): bypassed blocks
    return the same structure (a tensor, or a tuple whose first item is the hidden state)."""
    if model not in _TEMPLATES:
        captured: list[Any] = []
        layers = blocks_of(model).layers
        handle = layers[-1].register_forward_hook(lambda m, a, out: captured.append(out))
        device = next(model.parameters()).device
        try:
            with torch.no_grad():
                model(torch.ones(1, 2, dtype=torch.long, device=device), use_cache=False)
        finally:
            handle.remove()
        out = captured[0]
        _TEMPLATES[model] = (None, *out[1:]) if isinstance(out, tuple) else None
    return _TEMPLATES[model]


@dataclass
class FullPass:
    """What one full forward pass records.

    Attributes:
        inputs: ``inputs[i]`` is the hidden state entering block ``i``; ``inputs[n]`` is the last block's output.
        logits: the model's logits.
        template: an output of a block, to give bypassed blocks the same return structure.
    """

    inputs: list[torch.Tensor]
    logits: torch.Tensor | None
    template: Any


@contextlib.contextmanager
def patched_forwards(patches: Iterable[tuple[Any, Callable[[Callable], Callable]]]) -> Iterator[None]:
    """Within the block, give each module the forward ``make(current_forward)``; restore them afterwards.

    The patch is set on the instance, so the class and every other instance are untouched, and an
    instance-level forward that was there before (e.g. accelerate's device hooks) comes back as it was.
    """
    saved: list[tuple[Any, Any]] = []
    try:
        for module, make in patches:
            previous = module.__dict__.get("forward")
            new_forward = make(previous or module.forward)
            saved.append((module, previous))
            module.forward = new_forward
        yield
    finally:
        for module, previous in reversed(saved):
            if previous is None:
                del module.forward
            else:
                module.forward = previous


def bypass(model: Any, skip: Sequence[int] = (), inject: tuple[int, torch.Tensor] | None = None,
           template: Any = None):
    """Context: blocks in ``skip`` return their input; ``inject=(i, X)`` makes blocks ``0..i`` return their
    input except block ``i``, which returns ``X`` (so the model continues from ``X``).
    """
    layers = blocks_of(model).layers

    def identity(*args, **kwargs):
        return _as_output(_hidden_arg(args, kwargs), template)

    def constant(value):
        def forward(*args, **kwargs):
            return _as_output(value, template)
        return forward

    targets: dict[int, Callable] = {i: identity for i in skip}
    if inject is not None:
        start, value = inject
        targets.update({i: identity for i in range(start)})
        targets[start] = constant(value)
    return patched_forwards((layers[i], lambda _, fn=fn: fn) for i, fn in targets.items())


def full_pass(model: Any, input_ids: torch.Tensor, skip: Sequence[int] = (), keep_logits: bool = True,
              batch_size: int | None = None) -> FullPass:
    """Run the model once (blocks in ``skip`` bypassed) and record every block's input.

    Args:
        model: a causal LM.
        input_ids: ``[N, T]`` token ids.
        skip: blocks to bypass.
        keep_logits: also return the logits (else None: saves memory for large vocabularies).
        batch_size: rows per forward (default: all at once); results are concatenated.
    """
    layers = blocks_of(model).layers
    n = len(layers)
    chunks: list[list[torch.Tensor]] = [[] for _ in range(n + 1)]
    logits: list[torch.Tensor] = []
    template = block_template(model)

    def pre_hook(index):
        def hook(module, args, kwargs):
            chunks[index].append(_hidden_arg(args, kwargs).detach().clone())  # copies: a block may write in place
        return hook

    def last_hook(module, args, kwargs, output):
        chunks[n].append((output[0] if isinstance(output, tuple) else output).detach().clone())

    handles = [layers[i].register_forward_pre_hook(pre_hook(i), with_kwargs=True) for i in range(n)]
    handles.append(layers[n - 1].register_forward_hook(last_hook, with_kwargs=True))
    step = batch_size or input_ids.shape[0]
    try:
        with torch.no_grad(), bypass(model, skip=skip, template=template):
            for start in range(0, input_ids.shape[0], step):
                out = model(input_ids[start:start + step], use_cache=False)
                if keep_logits:
                    logits.append(out.logits)
    finally:
        for h in handles:
            h.remove()
    # A bypassed last block still reports its (passed-through) output via the forward hook.
    inputs = [torch.cat(c) for c in chunks]
    return FullPass(inputs=inputs, logits=torch.cat(logits) if keep_logits else None, template=template)


def logits_from(model: Any, input_ids: torch.Tensor, start: int, hidden: torch.Tensor,
                skip: Sequence[int] = ()) -> torch.Tensor:
    """Logits of the model continuing from ``hidden`` as the *output* of block ``start``.

    Blocks ``0..start`` are bypassed (block ``start`` yields ``hidden``); blocks in ``skip`` after it are
    bypassed too. ``input_ids`` only drives the model's own mask and position computation.
    """
    with torch.no_grad(), bypass(model, skip=[s for s in skip if s > start], inject=(start, hidden),
                                 template=block_template(model)):
        return model(input_ids, use_cache=False).logits
