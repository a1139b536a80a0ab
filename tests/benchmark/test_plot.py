"""bench.png is readable on its own: no label over the data or past an axis, the legend clear of every panel,
and the speedups drawn as a panel of their own (measured with min..max beside the ideal)."""

from __future__ import annotations

import pytest

from shortllm.benchmark import timing
from shortllm.benchmark.plot import bench_figure, plot_bench
from shortllm.benchmark.request import BenchRequest
from shortllm.benchmark.run import run_bench
from shortllm.models.loading import LoadSettings
from shortllm.models.surgery import drop_blocks
from tests.benchmark.fake_timing import fake_generate
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def report(tiny_llama_dir, tmp_path_factory):
    shorter = []
    for cut in ([1, 2], [2]):
        path = tmp_path_factory.mktemp("short")
        drop_blocks(tiny_model("llama"), cut).save_pretrained(path)
        shorter.append(str(path))
    mp = pytest.MonkeyPatch()
    mp.setattr(timing, "timed_generate", fake_generate([], [1.0] * 1000))
    try:
        req = BenchRequest(models=[str(tiny_llama_dir), *shorter], batch_sizes=[1, 2, 4, 8], prompt_lens=[5],
                           new_tokens=[4], warmup=0, repeats=2, settings=LoadSettings(device="cpu"))
        return run_bench(req).as_dict()
    finally:
        mp.undo()


def _extent(artist, renderer):
    return artist.get_window_extent(renderer)


def test_no_label_over_the_data_and_the_legend_clear_of_every_panel(report):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = bench_figure(report)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.axison]
    key = [ax for ax in fig.axes if not ax.axison]
    assert len(panels) == 5 and len(key) == 1
    for ax in panels:
        assert list(ax.texts) == [], [t.get_text() for t in ax.texts]  # the speedups were labels over the points
        assert ax.get_legend() is None
    legend = key[0].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert len(labels) == 3 + 2 * 2  # three models' lines, then measured and ideal for the two later ones
    box = _extent(legend, renderer)
    assert all(not box.overlaps(_extent(ax, renderer)) for ax in panels)
    assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)


def test_the_speedup_panel_draws_measured_and_ideal(report):
    fig = bench_figure(report)
    speed = next(ax for ax in fig.axes if ax.get_title().startswith("Decode speedup over"))
    later = [r for r in report["results"] if r["speedup"] is not None]
    drawn = {round(float(y), 6) for line in speed.get_lines() for y in line.get_ydata()}
    assert {round(r["speedup"], 6) for r in later} <= drawn
    assert {round(r["ideal_speedup"], 6) for r in later} <= drawn


def test_one_model_has_no_speedup_panel_and_saves(report, tmp_path):
    one = {**report, "models": report["models"][:1],
           "results": [r for r in report["results"] if r["model"] == report["models"][0]["label"]]}
    fig = bench_figure(one)
    assert len(fig.axes) == 4 and fig.axes[0].get_legend() is not None
    path = plot_bench(one, tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
