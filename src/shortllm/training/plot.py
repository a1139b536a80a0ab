"""``train_curve.png``: training loss (and CE / KL for distillation) and held-out loss against steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shortllm.plotting import literal_text


@literal_text
def plot_curve(curve: list[dict[str, Any]], eval_curve: list[dict[str, Any]], title: str, path: Path) -> None:
    """Draw the loss curves of a run to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    steps = [p["step"] for p in curve]
    ax.plot(steps, [p["loss"] for p in curve], color="#1f77b4", lw=1.2, label="train loss")
    if curve and "kl" in curve[0]:
        ax.plot(steps, [p["ce"] for p in curve], color="#2ca02c", lw=0.8, alpha=0.8, label="train CE")
        ax.plot(steps, [p["kl"] for p in curve], color="#9467bd", lw=0.8, alpha=0.8, label="train KL (x T^2)")
    if eval_curve:
        ax.plot([p["step"] for p in eval_curve], [p["loss"] for p in eval_curve], "o-", color="#d62728", lw=1.2,
                ms=4, label="held-out CE")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
