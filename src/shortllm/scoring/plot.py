"""``scores.png``: block scores as bars, the removal set highlighted, protected blocks marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shortllm.plotting import literal_text


@literal_text
def plot_scores(report: dict[str, Any], path: Path) -> None:
    """Draw the per-block scores of a score report to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = report["num_blocks"]
    scores = report["scores"]
    removal = set(report["removal"])
    protected = set(report["protected"])
    values = [s if s is not None else 0.0 for s in scores]
    colors = ["#d62728" if i in removal else "#bbbbbb" if i in protected else "#1f77b4" for i in range(n)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * n + 2), 3.6), dpi=120)
    ax.bar(range(n), values, color=colors, edgecolor="none")
    for i in protected:
        ax.bar(i, max(values) * 0.02 if values else 0, color="#bbbbbb", hatch="//")
    label = {
        "ppl": "calibration perplexity without the block", "sleb": "perplexity when removed (SLEB step)",
        "bi": "block influence (1 - cos)", "angular": f"angular distance, run of {report['extras'].get('run_length', 1)}",
        "taylor": "Taylor importance", "taylor+": "Taylor importance", "magnitude": "weight magnitude",
        "chop": "rank in chop order",
    }.get(report["criterion"], "score")
    if report["criterion"] in ("ppl", "sleb") and max(values, default=0) / max(min(v for v in values if v) if any(
            values) else 1, 1e-9) > 50:
        ax.set_yscale("log")  # one catastrophic block (often block 0) would flatten every other bar
    ax.set_xlabel("block")
    ax.set_ylabel(label)
    ax.set_xticks(range(n))
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(f"{report['model']}: {report['criterion']} scores (lower = removed first); "
                 f"{len(removal)} of {n} blocks removed", fontsize=9)
    ax.legend(handles=[Patch(color="#d62728", label="removed"), Patch(color="#1f77b4", label="kept"),
                       Patch(color="#bbbbbb", label="protected")], fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
