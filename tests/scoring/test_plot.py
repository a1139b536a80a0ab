"""``scores.png`` says what its bars are and shows what was chosen, for every kind of criterion.

The figure is inspected, not its pixels: y-label, legend texts, notes, bar colours and shaded spans.
"""

from __future__ import annotations

import pytest
from matplotlib.colors import to_hex

from shortllm.scoring.plot import REMOVED, describe_bars, plot_scores


def _report(criterion: str, scores, removal, protected=(), **extra):
    n = len(scores)
    return {"criterion": criterion, "model": "tiny", "num_blocks": n, "num_remove": len(removal),
            "protected": list(protected), "scores": list(scores), "removal": list(removal),
            "order": list(removal) + [i for i in range(n) if i not in removal and i not in protected],
            "norm": extra.pop("norm", None), "contiguous": criterion in ("angular", "chop"),
            "iterative": criterion in ("angular", "sleb"), "extras": extra}


def _angular(n=10, run=4, protected=(), removal_len=None):
    # distance of the run starting at s: lowest at s=2 for every length, so the best run starts there
    tables = {str(m): [0.5 + 0.01 * m + (0.0 if s == 2 else 0.1 + 0.01 * s) for s in range(n - m + 1)]
              for m in range(1, n)}
    k = removal_len or run
    scores = [tables[str(run)][s] if s < n - run + 1 and s not in protected else None for s in range(n)]
    return _report("angular", scores, list(range(2, 2 + k)), protected, run_length=run, run_start=2,
                   distances=tables)


def _drawn(report, tmp_path):
    fig = plot_scores(report, tmp_path / "scores.png")
    assert (tmp_path / "scores.png").read_bytes()[:4] == b"\x89PNG"
    ax = fig.axes[0]
    return ax, [t.get_text() for t in ax.get_legend().get_texts()], [t.get_text() for t in ax.texts]


def _bars(ax):
    """{block: (height, colour)} of the drawn bars."""
    return {round(p.get_x() + p.get_width() / 2): (p.get_height(), to_hex(p.get_facecolor()))
            for p in ax.containers[0]}


def _spans(ax):
    """Block ranges of the shaded spans (axvspan rectangles reach half a block beyond each end)."""
    bars = set(ax.containers[0].patches)
    return [(round(p.get_x() + 0.5), round(p.get_x() + p.get_width() - 0.5)) for p in ax.patches if p not in bars]


def test_angular_bars_are_run_starts_with_the_chosen_run_shaded_and_the_tail_explained(tmp_path):
    ax, legend, notes = _drawn(_angular(), tmp_path)
    assert ax.get_ylabel() == ("angular distance, input of block b to input of block b+4\n"
                               "(bar at b = the run of 4 blocks starting at b)")
    assert legend == ["start of the removed run (the lowest allowed run)", "start of another allowed run of 4",
                      "would be removed (4 blocks): blocks 2-5",
                      "no bar: a run of 4 starting at blocks 7-9 would pass the last block (9)"]
    assert notes == ["no run of 4 fits"]
    bars = _bars(ax)
    assert sorted(bars) == list(range(7))  # a bar for every start where a run of 4 fits, none after
    assert bars[2][1] == REMOVED and all(bars[s][1] != REMOVED for s in bars if s != 2)
    assert bars[2][0] == min(h for h, _ in bars.values())  # the red bar is the lowest run, as the label says
    assert (2, 5) in _spans(ax)
    assert "lower = removed first" not in ax.get_ylabel() + ax.get_title() + " ".join(legend)


def test_angular_run_touching_protected_blocks_is_labelled(tmp_path):
    ax, legend, notes = _drawn(_angular(n=8, run=2, protected=[0, 7]), tmp_path)
    assert "run would include a protected block (not allowed)" in legend
    assert "protected: block 0, block 7 (never removed)" in legend
    assert notes == ["no run\nof 2\nfits"]  # one block wide: the words are stacked
    bars = _bars(ax)
    assert bars[0][1] == "#c7c7c7" and bars[6][1] == "#c7c7c7"  # runs 0-1 and 6-7 include a protected block


def test_angular_shortened_by_ratio_plots_the_table_of_the_run_removed(tmp_path):
    report = _angular(n=10, run=4, removal_len=3)
    ax, legend, _ = _drawn(report, tmp_path)
    assert "bar at b = the run of 3 blocks starting at b" in ax.get_ylabel()
    assert "would be removed (3 blocks): blocks 2-4" in legend
    bars = _bars(ax)
    assert [bars[s][0] for s in sorted(bars)] == pytest.approx(report["extras"]["distances"]["3"])


def test_sleb_bars_are_step_perplexities_numbered(tmp_path):
    steps = [{"removed": 4, "ppl": 11.0}, {"removed": 1, "ppl": 12.5}, {"removed": 3, "ppl": 14.0}]
    scores = [30.0, 12.5, 16.0, 14.0, 11.0, 17.0]
    ax, legend, _ = _drawn(_report("sleb", scores, [1, 3, 4], baseline_ppl=10.0, steps=steps), tmp_path)
    assert ax.get_ylabel() == ("calibration perplexity with the block removed\n"
                               "(and the blocks of the earlier SLEB steps)")
    assert legend == ["would be removed (3 blocks): perplexity after its step (number above)",
                      "kept: perplexity if removed at step 3", "full model: perplexity 10"]
    assert {round(t.xy[0]): t.get_text() for t in ax.texts} == {4: "step 1", 1: "step 2", 3: "step 3"}


def test_sleb_pick_kept_by_the_ratio_is_told_apart(tmp_path):
    steps = [{"removed": 4, "ppl": 11.0}, {"removed": 1, "ppl": 12.5}]
    ax, legend, _ = _drawn(_report("sleb", [30.0, 12.5, 16.0, 14.0, 11.0, 17.0], [4], steps=steps), tmp_path)
    assert "picked by a step, kept to stay within --ratio" in legend
    assert _bars(ax)[1][1] == "#ff7f0e"


@pytest.mark.parametrize("criterion,norm,ylabel", [
    ("ppl", None, "calibration perplexity without the block\n(lower = removed first)"),
    ("bi", None, "Block Influence: 1 - cos(block input, output), mean over tokens\n(lower = removed first)"),
    ("taylor", 1, "Taylor importance: sum of |W x dL/dW|\n(lower = removed first)"),
    ("taylor+", 2, "Taylor importance: sum of |W x dL/dW|^2\n(lower = removed first)"),
    ("magnitude", 1, "weight magnitude: sum of |W|\n(lower = removed first)"),
])
def test_per_block_criteria_say_lower_is_removed_first(tmp_path, criterion, norm, ylabel):
    scores = [None, 3.0, 1.0, 2.0, 4.0, None]
    ax, legend, notes = _drawn(_report(criterion, scores, [2, 3], protected=[0, 5], norm=norm), tmp_path)
    assert ax.get_ylabel() == ylabel
    assert legend[:3] == ["would be removed (2 blocks)", "kept", "protected: block 0, block 5 (never removed)"]
    bars = _bars(ax)
    removed = [bars[i][0] for i in (2, 3)]
    assert max(removed) < min(bars[i][0] for i in (1, 4))  # here the label is true: removed bars are lowest
    assert notes == []


def test_ppl_log_scale_is_labelled_and_its_ticks_are_numbers(tmp_path):
    ax, legend, _ = _drawn(_report("ppl", [5000.0, 20.0, 21.0, 22.0], [1], baseline_ppl=18.0), tmp_path)
    assert ax.get_yscale() == "log" and ax.get_ylabel().endswith("[log scale]")
    assert "full model: perplexity 18" in legend
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert ticks and not any("$" in t or "mathdefault" in t for t in ticks)


def test_chop_bars_are_ranks_and_the_run_is_shaded(tmp_path):
    ax, legend, _ = _drawn(_report("chop", [4.0, 3.0, 2.0, 1.0, 0.0, 5.0], [3, 4]), tmp_path)
    assert ax.get_ylabel() == "position in the chop order\n(0 = removed first; no measurement)"
    assert legend == ["would be removed (2 blocks)", "kept", "the run before the last block: blocks 3-4"]
    assert (3, 4) in _spans(ax)


def test_one_block_is_singular(tmp_path):
    _, legend, _ = _drawn(_report("bi", [0.1, 0.2, 0.3], [0]), tmp_path)
    assert legend[0] == "would be removed (1 block)"


def test_describe_bars_matches_the_plot():
    assert describe_bars(_angular()).startswith("angular distance of the run of 4 blocks starting at the block")
    assert "lower = removed first" in describe_bars(_report("ppl", [1.0, 2.0], [0]))
    assert "lower = removed first" not in describe_bars(_report("sleb", [1.0, 2.0], [0], steps=[]))
