"""Plots draw user text literally (user text through markup, here matplotlib's math text)."""

from shortllm.training.plot import plot_curve


def test_dollar_signs_in_titles_do_not_break_the_plot(tmp_path):
    # With math text on, "$\foo$" raises ValueError (Unknown symbol) when the figure is saved.
    out = tmp_path / "curve.png"
    plot_curve([{"step": 1, "loss": 2.0, "tokens": 10}, {"step": 2, "loss": 1.5, "tokens": 20}], [],
               r"shortllm retrain: models/$\foo$ [red]x", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
