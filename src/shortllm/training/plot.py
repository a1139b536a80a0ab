"""``train_curve.png``: the training objective's terms (cross-entropy, and the KL for distillation) and the
held-out cross-entropy against optimizer steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shortllm.plotting import literal_text


def _same(a: list[float], b: list[float]) -> bool:
    return all(abs(x - y) <= 1e-9 * max(1.0, abs(x)) for x, y in zip(a, b))


@literal_text
def plot_curve(curve: list[dict[str, Any]], eval_curve: list[dict[str, Any]], title: str,
               path: Path) -> dict[str, Any]:
    """Draw the loss curves of a run to ``path`` (PNG).

    The training objective is drawn as its own line only where it differs from its terms (a kd run with
    ``--kd-alpha`` between 0 and 1, or hidden-state distillation): otherwise it would hide the KL (or the CE) it
    equals. Steps are whole numbers on the axis.

    Returns:
        What was drawn: ``{"labels": legend labels in order, "xticks": the step axis's tick values}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    steps = [p["step"] for p in curve]
    loss = [p["loss"] for p in curve]
    ce = [p.get("ce", p["loss"]) for p in curve]
    kl = [p["kl"] for p in curve] if curve and "kl" in curve[0] else None
    ax.plot(steps, ce, color="#2ca02c", lw=1.2, label="train CE")
    if kl is not None:
        ax.plot(steps, kl, color="#9467bd", lw=1.2, label="train KL (x T^2)")
    if not _same(loss, ce) and not (kl is not None and _same(loss, kl)):
        ax.plot(steps, loss, color="#1f77b4", lw=0.8, alpha=0.8, label="train objective")
    if eval_curve:
        ax.plot([p["step"] for p in eval_curve], [p["loss"] for p in eval_curve], "o-", color="#d62728", lw=1.2,
                ms=4, label="held-out CE")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    drawn = {"labels": [line.get_label() for line in ax.get_lines()],
             "xticks": [float(t) for t in ax.get_xticks()]}
    fig.savefig(path)
    plt.close(fig)
    return drawn
