"""``bench.png``: throughput and latency against batch size, one line per model, readable on its own."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from shortllm.plotting import literal_text
from shortllm.wording import plural

# (metric, panel title, scale of the value for display, y label)
_PANELS = (
    ("decode_tokens_per_s", "Decode throughput (after the first token)", 1.0, "tokens / s (all rows)"),
    ("throughput_tokens_per_s", "Total throughput (batch x new tokens / latency)", 1.0, "tokens / s"),
    ("prefill_s", "Time to first token (prefill)", 1000.0, "ms"),
    ("latency_s", "End-to-end latency (whole generate call)", 1.0, "s"),
)


@literal_text
def plot_bench(report: dict[str, Any], path: Path) -> Path:
    """Draw :func:`bench_figure` of a bench report (``BenchResult.as_dict()``) and save it as PNG at ``path``."""
    path = Path(path)
    bench_figure(report).savefig(path, format="png")
    return path


def bench_figure(report: dict[str, Any]) -> Any:
    """The bench figure: one panel per metric against batch size (log scale), one line per model and
    prompt/generation length; markers are medians and bars span min..max of the repeats. With several models a
    panel of each later model's decode speedup over the first follows (paired repeats: median, min..max) beside
    its ideal from FLOPs, and a panel for the legend; no label is written over the data. A result flagged
    unreliable is drawn with a hollow red-edged marker; the title counts the flagged results.

    Returns:
        A ``matplotlib.figure.Figure`` (no pyplot state).
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    rows = report["results"]
    models = [m["label"] for m in report["models"]]
    combos = sorted({(r["prompt_len"], r["new_tokens"]) for r in rows})
    series: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for r in rows:
        series[(r["model"], r["prompt_len"], r["new_tokens"])].append(r)
    compare = len(models) > 1
    fig = Figure(figsize=(13, 13 if compare else 9), dpi=100, layout="constrained")
    axes = fig.subplots(3 if compare else 2, 2)
    batches = sorted({r["batch_size"] for r in rows})

    def each_line(metric: str, first: int = 0):
        """(model index, combo index, label, points with a value) of every line of a panel."""
        for mi, model in enumerate(models[first:], first):
            for ci, (prompt_len, new_tokens) in enumerate(combos):
                pts = [p for p in sorted(series[(model, prompt_len, new_tokens)], key=lambda r: r["batch_size"])
                       if p[metric] is not None]
                label = model if len(combos) == 1 else f"{model} (prompt {prompt_len}, {new_tokens} new)"
                if pts:
                    yield mi, ci, label, pts

    def draw(ax, metric: str, scale: float, pts: list[dict], mi: int, ci: int, label: str) -> None:
        x = [p["batch_size"] for p in pts]
        y = [p[metric] * scale for p in pts]
        lo = [max(0.0, (p[metric] - p["min"][metric]) * scale) if p["min"].get(metric) is not None else 0.0
              for p in pts]
        hi = [max(0.0, (p["max"][metric] - p[metric]) * scale) if p["max"].get(metric) is not None else 0.0
              for p in pts]
        ax.errorbar(x, y, yerr=[lo, hi], color=_COLORS[mi % 10], linestyle=_STYLES[ci % 4], marker="o",
                    capsize=4, linewidth=2, label=label)
        bad = [(xv, yv) for p, xv, yv in zip(pts, x, y, strict=True) if not _trusted(p)]
        if bad:
            ax.plot(*zip(*bad, strict=True), linestyle="none", marker="o", markersize=13,
                    markerfacecolor="none", markeredgecolor="red", markeredgewidth=2)

    def frame(ax, title: str, ylabel: str) -> None:
        ax.set_title(title, fontsize=12)
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.set_xlim(batches[0] / 1.3, batches[-1] * 1.3)

    for ax, (metric, title, scale, ylabel) in zip(axes.flat, _PANELS):
        for mi, ci, label, pts in each_line(metric):
            draw(ax, metric, scale, pts, mi, ci, label)
        frame(ax, title, ylabel)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.05)  # room above the highest marker
    if compare:
        speed, key = axes[2][0], axes[2][1]
        speed.axhline(1.0, color="grey", linewidth=1)
        for mi, ci, label, pts in each_line("speedup", first=1):
            draw(speed, "speedup", 1.0, pts, mi, ci, f"{label}: measured")
            ideal = [(p["batch_size"], p["ideal_speedup"]) for p in pts if p.get("ideal_speedup") is not None]
            if ideal:
                speed.plot(*zip(*ideal, strict=True), color=_COLORS[mi % 10], linestyle=":", linewidth=1.5,
                           marker="_", markersize=14, label=f"{label}: ideal (FLOPs)")
        frame(speed, f"Decode speedup over {models[0]} (paired repeats)", "x (1 = as fast)")
        key.axis("off")
        handles, labels = axes[0][0].get_legend_handles_labels()
        more_handles, more_labels = speed.get_legend_handles_labels()
        key.legend(handles + more_handles, labels + more_labels, loc="center", fontsize=10, frameon=False)
    else:
        axes[0][0].legend(fontsize=9, loc="lower left")

    env, settings = report["environment"], report["settings"]
    lengths = ", ".join(f"prompt {p} + {n} new tokens" for p, n in combos)
    flagged = sum(not _trusted(r) for r in rows)
    verdict = (f"{flagged} of {len(rows)} results UNRELIABLE (red rings; reasons in bench.json 'trust')"
               if flagged else f"all {len(rows)} results within {settings.get('max_spread', 0.2):.0%} spread")
    fig.suptitle(
        f"shortllm bench: {lengths}; {env['device']} ({env.get('device_name') or '?'}), "
        f"torch threads: {env['torch_threads']}\nmedian of {plural(settings['repeats'], 'repeat')} after "
        f"{settings['warmup']} warm-up, models alternating; bars = min..max; speedups vs {models[0]}, "
        f"paired [min..max]\n{verdict}",
        fontsize=12, color="red" if flagged else "black",
    )
    return fig


_COLORS = [f"C{i}" for i in range(10)]
_STYLES = ["-", "--", ":", "-."]


def _trusted(row: dict[str, Any]) -> bool:
    return row.get("trust", {}).get("trusted", True)
