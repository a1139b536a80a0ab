"""lm-eval tasks whose data cannot be downloaded: one line naming the fix that applies to the task."""

from __future__ import annotations

from pathlib import Path

from shortllm.evaluation.lmeval import task_data_error


def _offline() -> Exception:
    try:
        try:
            raise ConnectionError("Couldn't reach 'baber/piqa' on the Hub (OfflineModeIsEnabled)")
        except ConnectionError as inner:
            raise RuntimeError("task build failed") from inner
    except RuntimeError as outer:
        return outer


def test_a_paper_task_points_at_the_data_dir():
    err = task_data_error(["piqa"], None, _offline())
    assert err.one_line() == (
        "cannot load the data of the lm-eval task piqa: the Hugging Face hub cannot be reached (offline) and the "
        "datasets cache holds no copy. Pass --data-dir with local copies of the task files (layout in "
        "docs/eval.md), or run once online so that the datasets cache holds them.")


def test_another_task_points_at_the_cache_and_include_path(tmp_path: Path):
    for data_dir in (None, tmp_path):
        err = task_data_error(["lambada_openai"], data_dir, _offline())
        assert err.hint.startswith("run once online so that the datasets cache holds them, or give task YAML "
                                   "that reads local files with --include-path")


def test_not_a_network_failure():
    err = task_data_error(["mytask"], None, ValueError("doc_to_text is not a template\nmore"))
    # the library's whole message, on one line (its first line alone can be a bare header)
    assert err.message == "cannot build the lm-eval task mytask: doc_to_text is not a template more"
