"""``scores.png``: what each criterion measured per block, and the blocks a prune with this plan would remove.

A bar means something different per criterion family, and the plot says which in its y-label and legend:

- one number per block (``ppl``, ``taylor``, ``magnitude``, ``bi``, ...): lower bars are removed first;
- ``angular`` (a contiguous run): the bar at block b is the distance of the run of N blocks *starting* at b; the
  removed blocks are the shaded run, not the lowest bars, and no run of N can start in the last N-1 blocks;
- ``sleb`` (iterative): a removed block's bar is the perplexity after its step (numbered), the others' the
  perplexity if removed at the last step;
- ``chop``: the bar is the block's position in the chop order (a rank, not a measurement).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shortllm.plotting import literal_text

REMOVED = "#d62728"
KEPT = "#1f77b4"
PICKED_KEPT = "#ff7f0e"
OFF = "#c7c7c7"
PROTECTED = "#7f7f7f"

_MEASURES = {  # what one bar of a per-block criterion is
    "ppl": "calibration perplexity without the block",
    "bi": "Block Influence: 1 - cos(block input, output), mean over tokens",
    "magnitude": "weight magnitude: sum of |W|{p}",
    "taylor": "Taylor importance: sum of |W x dL/dW|{p}",
    "taylor+": "Taylor importance: sum of |W x dL/dW|{p}",
    "auto": "calibration perplexity without the block (ppl's; auto compares whole cuts on held-out text)",
}


def _measure(report: dict[str, Any]) -> str:
    """What one bar of a per-block criterion is, with its norm (``--norm 2`` squares the terms)."""
    norm = report.get("norm") or 1
    return _MEASURES.get(report["criterion"], "score").replace("{p}", "" if norm == 1 else f"^{norm}")


@dataclass
class _View:
    """What one criterion's plot draws: bar heights and colours, labels, shaded runs and notes."""

    values: list[float | None]
    colors: list[str]
    ylabel: str
    legend: list[tuple[str, str]]  # (colour, text) for the bar kinds present
    title: str
    spans: list[tuple[int, int, str]] = field(default_factory=list)  # (first, last, legend text): removed runs
    notes: list[tuple[float, str]] = field(default_factory=list)  # (x, text) drawn near the axis
    blank: list[tuple[int, int, str]] = field(default_factory=list)  # (first, last, legend text): no bar fits
    bar_texts: list[tuple[int, str]] = field(default_factory=list)  # (block, text) above a bar
    baseline: float | None = None  # full-model perplexity, drawn as a line


def describe_bars(report: dict[str, Any]) -> str:
    """One line saying what a criterion's per-block score is and how it picks blocks (for the plot and tables).

    Args:
        report: a score report (``shortllm score``'s ``scores.json``).
    """
    criterion = report["criterion"]
    if criterion == "angular":
        run = report["extras"].get("run_length", report["num_remove"])
        return (f"angular distance of the run of {run} blocks starting at the block "
                "(the lowest run that avoids protected blocks is removed)")
    if criterion == "sleb":
        return ("calibration perplexity with the block removed: removed blocks at their SLEB step, "
                "the others at the last step (each step removes the lowest of that step)")
    if criterion == "chop":
        return "position in the chop order (0 = removed first): the run just before the last block"
    if report.get("contiguous") or report.get("iterative"):
        return f"{_measure(report)} (the criterion's own choice is removed)"
    return f"{_measure(report)} (lower = removed first)"


def _runs(blocks: list[int]) -> list[tuple[int, int]]:
    """Sorted blocks as (first, last) runs of consecutive indices."""
    runs: list[tuple[int, int]] = []
    for b in sorted(blocks):
        if runs and b == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((b, b))
    return runs


def _blocks_text(first: int, last: int) -> str:
    return f"block {first}" if first == last else f"blocks {first}-{last}"


def _would_remove(removal: list[int]) -> str:
    from shortllm.wording import plural

    return f"would be removed ({plural(len(removal), 'block')})"


def _per_block_view(report: dict[str, Any], title: str) -> _View:
    n, removal = report["num_blocks"], set(report["removal"])
    scores = report["scores"]
    colors = [REMOVED if i in removal else KEPT for i in range(n)]
    legend = [(REMOVED, _would_remove(report["removal"])), (KEPT, "kept")]
    # a registered criterion of another kind picks its own way: do not claim the lowest bars go first
    rule = "the criterion's own choice is red" if report.get("contiguous") or report.get("iterative") \
        else "lower = removed first"
    return _View(list(scores), colors, f"{_measure(report)}\n({rule})", legend, title,
                 baseline=report["extras"].get("baseline_ppl") if report["criterion"] == "ppl" else None)


def _angular_view(report: dict[str, Any], title: str) -> _View:
    from shortllm.wording import plural

    n, removal = report["num_blocks"], sorted(report["removal"])
    # --ratio may have shortened the run below the scored length: show the table of the run actually chosen
    run = len(removal) or report["extras"].get("run_length", 1)
    distances = report["extras"].get("distances", {}).get(str(run))
    if distances is None:
        distances = list(report["scores"][:n - run + 1])
    allowed = set(range(n)) - set(report["protected"])
    start = removal[0] if removal else None
    values: list[float | None] = [distances[s] if s < len(distances) else None for s in range(n)]
    colors, kinds = [], set()
    for s in range(n):
        if s == start:
            kind = REMOVED
        elif s < len(distances) and all(b in allowed for b in range(s, s + run)):
            kind = KEPT
        else:
            kind = OFF
        colors.append(kind)
        if values[s] is not None:
            kinds.add(kind)
    legend = [(REMOVED, "start of the removed run (the lowest allowed run)"),
              (KEPT, f"start of another allowed run of {run}")]
    if OFF in kinds:
        legend.append((OFF, "run would include a protected block (not allowed)"))
    spans = [(start, start + run - 1, f"{_would_remove(removal)}: {_blocks_text(start, start + run - 1)}")] \
        if start is not None else []
    notes, blank = [], []
    if len(distances) < n:  # starts past n - run: the run would go beyond the last block
        first = len(distances)
        narrow = n - first <= 2  # one or two blocks wide: stack the words
        notes.append(((first + n - 1) / 2, f"no run\nof {run}\nfits" if narrow else f"no run of {run} fits"))
        blank.append((first, n - 1, f"no bar: a run of {run} starting at {_blocks_text(first, n - 1)} "
                                    f"would pass the last block ({n - 1})"))
    ylabel = (f"angular distance, input of block b to input of block b+{run}\n"
              f"(bar at b = the run of {plural(run, 'block')} starting at b)")
    return _View(values, colors, ylabel, legend, title, spans=spans, notes=notes, blank=blank)


def _sleb_view(report: dict[str, Any], title: str) -> _View:
    n, removal = report["num_blocks"], set(report["removal"])
    steps = report["extras"].get("steps") or []
    step_of = {s["removed"]: k for k, s in enumerate(steps, 1)}
    colors, bar_texts, over_budget = [], [], False
    for i in range(n):
        if i in removal:
            colors.append(REMOVED)
        elif i in step_of:  # picked by a step, but --ratio kept it to stay within the parameter budget
            colors.append(PICKED_KEPT)
            over_budget = True
        else:
            colors.append(KEPT)
        if i in step_of:
            bar_texts.append((i, f"step {step_of[i]}"))
    last = len(steps)
    legend = [(REMOVED, f"{_would_remove(report['removal'])}: perplexity after its step (number above)"),
              (KEPT, f"kept: perplexity if removed at step {last}" if last else "kept")]
    if over_budget:
        legend.insert(1, (PICKED_KEPT, "picked by a step, kept to stay within --ratio"))
    ylabel = "calibration perplexity with the block removed\n(and the blocks of the earlier SLEB steps)"
    return _View(list(report["scores"]), colors, ylabel, legend, title, bar_texts=bar_texts,
                 baseline=report["extras"].get("baseline_ppl"))


def _chop_view(report: dict[str, Any], title: str) -> _View:
    n, removal = report["num_blocks"], report["removal"]
    colors = [REMOVED if i in set(removal) else KEPT for i in range(n)]
    legend = [(REMOVED, _would_remove(removal)), (KEPT, "kept")]
    spans = [(a, b, f"the run before the last block: {_blocks_text(a, b)}") for a, b in _runs(removal)]
    ylabel = "position in the chop order\n(0 = removed first; no measurement)"
    return _View(list(report["scores"]), colors, ylabel, legend, title, spans=spans)


def _view(report: dict[str, Any]) -> _View:
    n, k = report["num_blocks"], len(report["removal"])
    title = f"{report['model']}: {report['criterion']}, {k} of {n} blocks would be removed"
    views = {"angular": _angular_view, "sleb": _sleb_view, "chop": _chop_view}
    return views.get(report["criterion"], _per_block_view)(report, title)


@literal_text
def plot_scores(report: dict[str, Any], path: Path | None = None) -> Any:
    """Draw a score report's per-block bars, the removal set and protected blocks; save a PNG to ``path``.

    Every bar kind, shaded run and note carries a label saying what it is (see the module docstring).

    Args:
        report: a score report (``shortllm score``'s ``scores.json``).
        path: where to save the PNG; None draws without saving.

    Returns:
        The (closed) matplotlib ``Figure``, for inspection.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if report["criterion"] == "auto":  # a search: one bar per candidate cut, not per block
        return _plot_candidates(report, path)
    n = report["num_blocks"]
    protected = set(report["protected"])
    view = _view(report)
    heights = [v if v is not None else 0.0 for v in view.values]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * n + 2) + 3.2, 3.8), dpi=120)
    drawn = [i for i, v in enumerate(view.values) if v is not None]
    ax.bar(drawn, [heights[i] for i in drawn], color=[view.colors[i] for i in drawn], edgecolor="none")
    positive = [v for v in view.values if v is not None and v > 0]
    log = (report["criterion"] in ("ppl", "sleb") and positive and max(positive) / min(positive) > 50)
    if log:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_yscale("log")  # one catastrophic block (often block 0) would flatten every other bar
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # math text is off: no 10^{3}
        ax.yaxis.set_minor_formatter(NullFormatter())
    handles = [Patch(color=c, label=text) for c, text in view.legend]
    for first, last, text in view.spans:
        ax.axvspan(first - 0.5, last + 0.5, color=REMOVED, alpha=0.15, zorder=0)
        handles.append(Patch(color=REMOVED, alpha=0.15, label=text))
    for first, last, text in view.blank:
        ax.axvspan(first - 0.5, last + 0.5, facecolor="#f2f2f2", edgecolor="none", zorder=0)
        handles.append(Patch(facecolor="#f2f2f2", edgecolor="#bbbbbb", label=text))
    for first, last in _runs(sorted(protected)):
        ax.axvspan(first - 0.5, last + 0.5, facecolor="none", edgecolor=PROTECTED, hatch="//", lw=0, zorder=0)
    if protected:
        where = ", ".join(_blocks_text(a, b) for a, b in _runs(sorted(protected)))
        handles.append(Patch(facecolor="white", edgecolor=PROTECTED, hatch="//",
                             label=f"protected: {where} (never removed)"))
    if view.baseline:
        ax.axhline(view.baseline, color="black", lw=0.8, ls="--")
        handles.append(plt.Line2D([], [], color="black", lw=0.8, ls="--",
                                  label=f"full model: perplexity {view.baseline:.4g}"))
    for x, text in view.notes:
        ax.text(x, 0.03, text, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7,
                color="#555555")
    for i, text in view.bar_texts:
        ax.annotate(text, (i, heights[i]), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                    fontsize=6, rotation=90)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("block (original index)")
    ax.set_ylabel(view.ylabel + (" [log scale]" if log else ""), fontsize=8)
    ax.set_xticks(range(n))
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(view.title, fontsize=9)
    return _finish(fig, ax, handles, path)


def _finish(fig: Any, ax: Any, handles: list[Any], path: Path | None) -> Any:
    """The legend outside the axes on the right, the layout, the file (if ``path``); the figure closed and returned."""
    import matplotlib.pyplot as plt

    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return fig


def _cut_text(removed: list[int]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in _runs(removed))


def _plot_candidates(report: dict[str, Any], path: Path | None) -> Any:
    """``--criterion auto``: every candidate cut's held-out perplexity (one horizontal bar each, best at the
    top), the winner in red, the refinement steps in orange and the full model as a dashed line."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    extras = report["extras"]
    rows = [(f"{_cut_text(c['removed'])}  ({', '.join(c['sources'])})", c["heldout_ppl"], KEPT)
            for c in extras["candidates"]]
    if rows:
        rows[0] = (rows[0][0], rows[0][1], REMOVED if not extras.get("refine_steps") else PROTECTED)
    for k, step in enumerate(extras.get("refine_steps") or [], 1):
        last = k == len(extras["refine_steps"])
        rows.insert(k - 1, (f"{_cut_text(step['removed'])}  (refinement step {k})", step["heldout_ppl"],
                            REMOVED if last else PICKED_KEPT))
    rows.sort(key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(9.5, 1.2 + 0.22 * len(rows)), dpi=120)
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [r[1] for r in rows], color=[r[2] for r in rows], edgecolor="none")
    ax.set_yticks(ys)
    ax.set_yticklabels([r[0] for r in rows], fontsize=6)
    values = [r[1] for r in rows]
    if values and max(values) / max(min(values), 1e-9) > 50:
        ax.set_xscale("log")
    base = extras.get("baseline_heldout_ppl")
    handles = [Patch(color=REMOVED, label=f"chosen: {_cut_text(extras['winner']['removed'])}"),
               Patch(color=KEPT, label="other candidates (sources in brackets)")]
    if extras.get("refine_steps"):
        handles[1:1] = [Patch(color=PROTECTED, label="best one-shot candidate (start of the refinement)"),
                        Patch(color=PICKED_KEPT, label="refinement steps")]
    if base:
        ax.axvline(base, color="black", lw=0.8, ls="--")
        handles.append(plt.Line2D([], [], color="black", lw=0.8, ls="--", label=f"full model: {base:.4g}"))
    heldout = (report.get("calibration") or {}).get("heldout") or {}
    ax.set_xlabel(f"held-out perplexity ({heldout.get('tokens', '?')} tokens from documents the scoring windows "
                  "did not use; lower is better)", fontsize=8)
    k = len(extras["winner"]["removed"])
    ax.set_title(f"{report['model']}: auto, candidate cuts of {k} of {report['num_blocks']} blocks", fontsize=9)
    return _finish(fig, ax, handles, path)
