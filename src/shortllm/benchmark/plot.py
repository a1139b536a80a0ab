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
    """Draw a 2x2 figure from a bench report (``BenchResult.as_dict()``) and save it as PNG at ``path``.

    Each panel plots one metric against batch size (log scale), one line per model and prompt/generation
    length; markers are medians and bars span min..max of the repeats. Non-first models are annotated with
    their measured speedup over the first model with its min..max (paired repeats), and the ideal one from
    FLOPs, on the decode panel. A result flagged unreliable is drawn with a hollow red-edged marker and its
    label says so; the title counts the flagged results.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    rows = report["results"]
    models = [m["label"] for m in report["models"]]
    combos = sorted({(r["prompt_len"], r["new_tokens"]) for r in rows})
    series: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for r in rows:
        series[(r["model"], r["prompt_len"], r["new_tokens"])].append(r)

    fig = Figure(figsize=(13, 9), dpi=100, layout="constrained")
    axes = fig.subplots(2, 2)
    colors = [f"C{i}" for i in range(10)]
    styles = ["-", "--", ":", "-."]
    batches = sorted({r["batch_size"] for r in rows})
    for ax, (metric, title, scale, ylabel) in zip(axes.flat, _PANELS, strict=True):
        for mi, model in enumerate(models):
            for ci, (prompt_len, new_tokens) in enumerate(combos):
                pts = sorted(series[(model, prompt_len, new_tokens)], key=lambda r: r["batch_size"])
                pts = [p for p in pts if p[metric] is not None]
                if not pts:
                    continue
                x = [p["batch_size"] for p in pts]
                y = [p[metric] * scale for p in pts]
                lo = [max(0.0, (p[metric] - p["min"][metric]) * scale) for p in pts]
                hi = [max(0.0, (p["max"][metric] - p[metric]) * scale) for p in pts]
                label = model if len(combos) == 1 else f"{model} (prompt {prompt_len}, {new_tokens} new)"
                ax.errorbar(x, y, yerr=[lo, hi], color=colors[mi % 10], linestyle=styles[ci % 4], marker="o",
                            capsize=4, linewidth=2, label=label)
                bad = [(xv, yv) for p, xv, yv in zip(pts, x, y, strict=True) if not _trusted(p)]
                if bad:
                    ax.plot(*zip(*bad, strict=True), linestyle="none", marker="o", markersize=13,
                            markerfacecolor="none", markeredgecolor="red", markeredgewidth=2)
                if metric == "decode_tokens_per_s" and mi > 0:
                    for p, xv, yv in zip(pts, x, y, strict=True):
                        if p["speedup"] is not None:
                            text = f"x{p['speedup']:.2f}"
                            if p.get("min", {}).get("speedup") is not None:
                                text += f" [x{p['min']['speedup']:.2f}..x{p['max']['speedup']:.2f}]"
                            text += f" (ideal x{p['ideal_speedup']:.2f})"
                            if not _trusted(p):
                                text += " UNRELIABLE"
                            last = xv == batches[-1]  # write the last point's label leftwards, inside the panel
                            note = ax.annotate(text, (xv, yv), textcoords="offset points",
                                               xytext=(-8 if last else 8, -16), ha="right" if last else "left",
                                               fontsize=9, color="red" if not _trusted(p) else colors[mi % 10])
                            note.set_in_layout(False)  # long labels must not shrink the panels
        ax.set_title(title, fontsize=12)
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.set_xlim(batches[0] / 1.6, batches[-1] * 1.6)  # room for the end labels
    axes[0][0].legend(fontsize=9, loc="upper left")

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
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _trusted(row: dict[str, Any]) -> bool:
    return row.get("trust", {}).get("trusted", True)
