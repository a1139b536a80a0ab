"""``prune --replace``: stand-ins for the removed blocks, folded into the weights that stay.

This module holds what every method shares (options, context, the method record, the maths of runs and
token weights) and ReplaceMe's ``linear`` method; ``pruning/streamline.py`` holds LLM-Streamline's trained
``block``; ``pruning/replacements.py`` names both (``get_replacement``). A method is one function
``(ReplaceContext) -> record`` and one entry there. Each runs after the plan and before surgery, on the loaded
model, and returns a JSON-ready record for the manifest.

``linear`` is ReplaceMe (Shopkhoev et al. 2025, arXiv 2505.02819), training-free. For a contiguous run of
removed blocks ``s..e`` and the kept block ``b = s - 1`` before it, block ``b`` computes

    h_s = a + c * P,     P = mlp_b(norm(a)) = the output of its MLP's output projection (bias included)

where ``a`` is the residual stream after block ``b``'s attention and ``c`` a family constant (1; Granite's
``residual_multiplier``). The run then maps ``h_s`` to ``h_{e+1}``. ReplaceMe estimates one linear map ``T``
(hidden x hidden) with ``a + c * P T ~= h_{e+1}``, i.e. by least squares over calibration tokens

    T = argmin || P T - Y ||^2 + lambda ||T||^2,   Y = (h_{e+1} - h_s) / c + P   (since a = h_s - c P)
      = (P^T P + lambda I)^{-1} P^T Y,

accumulated in float64 on the CPU (``lambda = --replace-ridge x mean(diag(P^T P))``, scale-free). By default
each token's row is weighted by ``1 / ||h_{e+1}||^2`` (``--replace-objective token``; ``mse`` is the paper's
unweighted form): the first token's massive activations would otherwise decide the map alone. Because
``P = x W^T + b`` for the projection ``(W, b)``, ``P T = x (W^T T) + b T``: the map folds into the weights,
``W <- T^T W`` and ``b <- b T`` (GPT-2's ``Conv1D`` stores ``W`` transposed: ``W <- W T``). The model keeps
its architecture and loads in stock transformers. Several runs are fitted in order, each on the model with
the earlier runs already replaced (their blocks bypassed), in one block-by-block pass over the calibration
windows (each block runs once, the block before each run once more after its fold). Where it is folded, per
family, is data in ``models/arch.py`` (``MLP_OUTPUTS``); families whose block normalises the MLP output before the residual
(Gemma 2/3, OLMo 2/3: ``post_feedforward_layernorm``) or have no single output projection (MoE), and runs
starting at block 0, are refused by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shortllm.errors import BlockSelectionError, DataError

log = logging.getLogger(__name__)


OBJECTIVES = ("token", "mse")
INITS = ("last", "first", "previous")  # where a trained replacement block starts (pruning/streamline.py)


@dataclass(frozen=True)
class ReplaceOptions:
    """Calibration, objective and training of a replacement.

    Attributes:
        samples: calibration windows (of the scoring ``--seq-len``, same corpus and seed) the stand-in is fitted
            on; ``None``: the method's own default (``Replacement.default_samples``).
        ridge: ``linear``: the ridge term relative to the mean diagonal of ``P^T D P`` (``D`` the objective's
            token weights; 0: plain least squares).
        objective: ``token`` (default): each token's squared error relative to its target's squared norm,
            averaged over tokens; ``mse``: the papers' plain squared error over all elements. On real models the
            first token carries massive activations (SmolLM2-135M: 14,000x the mean square of the others), so
            ``mse`` fits that one position and the rest of the text pays for it.
        epochs, lr, init: ``block``: passes over the calibration windows, AdamW learning rate, and where the
            trained block starts (``last`` | ``first`` removed block of the run, ``previous``: the kept block
            before it).
    """

    samples: int | None = None
    ridge: float = 1e-4
    objective: str = "token"
    epochs: int = 4
    # measured on the run 12-18 of SmolLM2-135M, 256 x 128 C4 windows, 4 epochs: WikiText-2 ppl 123.9 at 1e-4,
    # 104.0 at 1e-3, 97.3 at 3e-3, 95.3 at 5e-3, 96.3 at 1e-2 (docs/retrain.md, replacement block)
    lr: float = 5e-3
    init: str = "last"


@dataclass
class ReplaceContext:
    """What a replacement method receives.

    Attributes:
        model: the loaded causal LM, modified in place (before surgery removes ``removed``).
        input_ids: ``[N, T]`` calibration windows.
        removed: the blocks the plan removes (current indices, ascending).
        options: the method's options.
        batch_size: calibration rows per forward. ``linear`` keeps the hidden states of every calibration
            window (``N x T x hidden`` in the model's dtype, a few copies at the peak) while it walks the blocks.
        progress: called as work advances.
    """

    model: Any
    input_ids: Any
    removed: list[int]
    options: ReplaceOptions = field(default_factory=ReplaceOptions)
    batch_size: int = 8
    progress: Callable[[int, int], None] = lambda done, total: None


@dataclass(frozen=True)
class Replacement:
    """A registered replacement method.

    Attributes:
        run: ``ReplaceContext -> record`` (modifies the model in place).
        check: ``(config, removed) -> None``, raising before any weights load when the method cannot apply.
        needs_data: whether ``run`` needs calibration windows.
        protect_first: blocks at the start that a criterion must not remove for the method to apply (``prune``
            protects them when ``--protect-first`` is not given).
    """

    name: str
    run: Callable[[ReplaceContext], dict[str, Any]]
    check: Callable[[Any, Sequence[int]], None]
    summary: str
    reference: str = ""
    needs_data: bool = True
    protect_first: int = 0
    default_samples: int = 64  # calibration windows when --replace-samples is not given
    # removed blocks that stay, as the trained stand-ins (``block``: each run's last); --ratio counts them
    kept_back: Callable[[Sequence[int]], list[int]] | None = None


def check_options(options: ReplaceOptions) -> None:
    """Refuse sizes that cannot fit a map.

    Raises:
        DataError: ``samples`` or ``epochs`` < 1, a negative ``ridge``, a learning rate <= 0, an unknown
            objective or init.
    """
    if options.samples is not None and options.samples < 1:
        raise DataError(f"--replace-samples {options.samples} must be at least 1", "leave it out for the default")
    if not options.ridge >= 0:
        raise DataError(f"--replace-ridge {options.ridge:g} must be >= 0", f"the default is {ReplaceOptions().ridge:g}")
    if options.objective not in OBJECTIVES:
        raise DataError(f"unknown --replace-objective '{options.objective}'", f"use one of {', '.join(OBJECTIVES)}")
    default = ReplaceOptions()
    if options.epochs < 1:
        raise DataError(f"--replace-epochs {options.epochs} must be at least 1", f"the default is {default.epochs}")
    if not options.lr > 0:
        raise DataError(f"--replace-lr {options.lr:g} must be positive", f"the default is {default.lr:g}")
    if options.init not in INITS:
        raise DataError(f"unknown --replace-init '{options.init}'", f"use one of {', '.join(INITS)}")


# ---------------------------------------------------------------------------------------------- pure maths

def runs_of(removed: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted blocks as ``(first, last)`` runs of consecutive indices."""
    runs: list[tuple[int, int]] = []
    for b in sorted(removed):
        if runs and b == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((b, b))
    return runs


def ridge_solve(ptp, pty, ridge: float):
    """``T = (P^T D P + lambda I)^{-1} P^T D Y`` with ``lambda = ridge x mean(diag(P^T D P))``.

    Args:
        ptp: ``[H, H]`` float64 Gram matrix ``P^T D P`` of the projection outputs (``D``: per-token weights,
            :func:`token_weights`).
        pty: ``[H, H]`` float64 cross term ``P^T D Y`` with the targets.
        ridge: relative ridge term (>= 0).

    Returns:
        ``[H, H]`` float64 ``T``.
    """
    import torch

    lam = ridge * ptp.diagonal().mean().clamp_min(1e-30)
    a = ptp + lam * torch.eye(ptp.shape[0], dtype=ptp.dtype, device=ptp.device)
    return torch.linalg.lstsq(a, pty).solution if ridge == 0 else torch.linalg.solve(a, pty)


def token_weights(target, objective: str):
    """``[N, 1]`` least-squares weight of each token row of ``target`` (``[N, H]``): ``1 / ||target_n||^2`` for
    the ``token`` objective (every token's error counts relative to its own size), 1 for ``mse``."""
    import torch

    if objective == "mse":
        return torch.ones(target.shape[0], 1, dtype=target.dtype, device=target.device)
    return 1.0 / (target ** 2).sum(-1, keepdim=True).clamp_min(1e-30)


def fold_into(module: Any, t) -> None:
    """Make ``module``'s output ``P`` become ``P T`` (``nn.Linear``: ``W <- T^T W``; ``Conv1D``: ``W <- W T``;
    bias ``b <- b T``), computed in float64 and stored in the module's dtype."""
    import torch

    with torch.no_grad():
        w = module.weight
        w64 = w.detach().to("cpu", torch.float64)
        new = w64 @ t if type(module).__name__ == "Conv1D" else t.T @ w64
        w.copy_(new.to(w.dtype))
        if getattr(module, "bias", None) is not None:
            b = module.bias
            b.copy_((b.detach().to("cpu", torch.float64) @ t).to(b.dtype))


# ---------------------------------------------------------------------------------------------- linear

def _fold_spec(config: Any):
    from shortllm.models.arch import MLP_FOLD_REFUSED, MLP_OUTPUTS, language_config

    config = language_config(config)
    model_type = getattr(config, "model_type", "?")
    spec = MLP_OUTPUTS.get(model_type)
    if spec is None:
        reason = MLP_FOLD_REFUSED.get(model_type, "is not in the table of MLP output projections")
        raise BlockSelectionError(
            f"--replace linear cannot fold into model type '{model_type}': it {reason}",
            f"prune without --replace, or heal with shortllm retrain; --replace linear supports "
            f"{', '.join(sorted(MLP_OUTPUTS))}")
    if spec.off_when and getattr(config, spec.off_when[0], None) == spec.off_when[1]:
        raise BlockSelectionError(
            f"--replace linear cannot fold into this {model_type} model: with {spec.off_when[0]}="
            f"{spec.off_when[1]} a norm follows the MLP output", "prune without --replace")
    return spec, (getattr(config, spec.scale_key) if spec.scale_key else 1.0)


def check_linear(config: Any, removed: Sequence[int]) -> None:
    """Refuse what ``linear`` cannot do, before weights load: a family it cannot fold into, a run at block 0.

    Raises:
        BlockSelectionError: naming the family or the run, with a hint.
    """
    _fold_spec(config)
    runs = runs_of(removed)
    if runs and runs[0][0] == 0:
        first, last = runs[0]
        raise BlockSelectionError(
            f"--replace linear needs a kept block before each removed run, but the run {first}-{last} starts "
            "at block 0", "protect it with --protect-first 1, or choose blocks that do not include block 0")


def _module(block: Any, path: str) -> Any:
    for name in path.split("."):
        block = getattr(block, name)
    return block


def linear_replace(ctx: ReplaceContext) -> dict[str, Any]:
    """ReplaceMe: per removed run, fit ``T`` and fold it into the preceding block (module docstring).

    With the ``token`` objective (default) each token's row of the least squares is weighted by
    ``1 / ||h_{e+1}||^2`` (weighted ridge regression: ``T = (P^T D P + lambda I)^{-1} P^T D Y``, ``D`` the
    diagonal of weights), so the map minimises the mean relative error per token; ``mse`` is the paper's plain
    least squares, which on real models fits the first token's massive activations.

    Returns:
        ``{"method", "ridge", "objective", "tokens", "runs": [{"blocks", "folded_into", "join_error_removed",
        "join_error_linear"}]}``, the join errors being ``sqrt(sum w ||h_{e+1} - prediction||^2 / sum w
        ||h_{e+1}||^2)`` over the calibration tokens (``w`` the objective's weights: with ``token`` the root of
        the mean relative squared error) for plain removal and for the linear map.

    Raises:
        BlockSelectionError: as :func:`check_linear`.
    """
    import torch

    from shortllm.models.arch import blocks_of
    from shortllm.scoring.base import row_chunks
    from shortllm.scoring.sweep import capture_calls, run_block

    check_linear(ctx.model.config, ctx.removed)
    spec, scale = _fold_spec(ctx.model.config)
    layers = blocks_of(ctx.model).layers
    runs = runs_of(ctx.removed)
    ids = ctx.input_ids
    record: list[dict[str, Any]] = []
    result = {"method": "linear", "ridge": ctx.options.ridge, "objective": ctx.options.objective,
              "tokens": int(ids.numel()), "runs": record}
    if not runs:
        return result
    # One pass, block by block, over all calibration windows (in row chunks): each block runs once, plus the
    # block before each run once more after its fold, instead of one full forward per run.
    with torch.no_grad():
        entries = [capture_calls(ctx.model, ids[rows], runs[-1][1]) for rows in row_chunks(ids.shape[0],
                                                                                            max(1, ctx.batch_size))]
    calls = [c for _, c in entries]

    def run(i: int, states: list[Any]) -> list[Any]:
        with torch.no_grad():
            return [run_block(layers[i], x, c[i]) for x, c in zip(states, calls)]

    states, done = [hidden for hidden, _ in entries], 0  # states: the input of block `done`
    total = runs[-1][1] + 1 + len(runs)
    for first, last in runs:
        for i in range(done, first - 1):
            states = run(i, states)
            ctx.progress(i + 1 + len(record), total)
        proj = _module(layers[first - 1], spec.path)
        captured: list[Any] = []
        # a copy: some blocks add to the projection's output in place (Falcon: ``mlp_output += attention``)
        handle = proj.register_forward_hook(lambda m, a, out: captured.append(out.detach().clone()))
        try:
            h_s = run(first - 1, states)  # the run's input
        finally:
            handle.remove()
        targets = h_s
        for j in range(first, last + 1):
            targets = run(j, targets)  # the run's output
        hidden = h_s[0].shape[-1]
        ptp = torch.zeros(hidden, hidden, dtype=torch.float64)
        pty = torch.zeros_like(ptp)
        stats = torch.zeros(3, dtype=torch.float64)  # ||Y - P||^2, ||Y||^2, ||target||^2 (scaled)
        if len(captured) != len(h_s):
            raise BlockSelectionError(f"--replace linear: {spec.path} of block {first - 1} ran {len(captured)} "
                                      f"times for {len(h_s)} calibration chunks, so its output cannot be captured")
        for p, start, target in zip(captured, h_s, targets, strict=True):
            p = p.reshape(-1, hidden).to("cpu", torch.float64)
            start = start.reshape(-1, hidden).to("cpu", torch.float64)
            target = target.reshape(-1, hidden).to("cpu", torch.float64)
            y = (target - start) / scale + p
            w = token_weights(target, ctx.options.objective)
            ptp += (p * w).T @ p
            pty += (p * w).T @ y
            stats += torch.stack([(w * (y - p) ** 2).sum(), (w * y ** 2).sum(),
                                  (w * target ** 2).sum() / scale ** 2])
        captured.clear()
        h_s = targets = []  # free the run's activations before the next stream is made
        t = ridge_solve(ptp, pty, ctx.options.ridge)
        # ||P T - Y||^2 from the accumulators: tr(T^T A T) - 2 tr(T^T B) + ||Y||^2
        err = (t * (ptp @ t)).sum() - 2 * (t * pty).sum() + stats[1]
        fold_into(proj, t)
        states = run(first - 1, states)  # with the map folded in: the input of block last + 1 once the run goes
        done = last + 1
        ctx.progress(done + len(record) + 1, total)
        norm = stats[2].sqrt()
        record.append({"blocks": [first, last], "folded_into": f"block {first - 1} {spec.path}",
                       "join_error_removed": round(float(stats[0].sqrt() / norm), 6),
                       "join_error_linear": round(float(err.clamp_min(0).sqrt() / norm), 6)})
        log.info("linear replacement of blocks %d-%d folded into block %d %s (join error %.4g -> %.4g)",
                 first, last, first - 1, spec.path, record[-1]["join_error_removed"],
                 record[-1]["join_error_linear"])
    return result
