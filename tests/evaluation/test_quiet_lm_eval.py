"""lm-eval stays off stderr: no progress bars without -v, no warning that shortllm's own tasks replace lm-eval's."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from shortllm.evaluation.lmeval import _own_overrides_unlogged
from shortllm.evaluation.tasks import TASKS_DIR


def test_an_eval_with_tasks_prints_nothing_on_stderr(tiny_lm_dir, data_root, tmp_path):
    """A real run (its own process, stderr piped): the table on stdout, and not one line of lm-eval on stderr.

    lm-eval draws three bars per task (building requests, tokenizing, running them) and enables two of them itself.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TQDM_", "HF_HUB_DISABLE", "HF_DATASETS_DIS"))}
    env.update(SHORTLLM_HEARTBEAT_S="3600", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_DATASETS_CACHE=str(tmp_path / "datasets-cache"))
    result = subprocess.run(
        [sys.executable, "-m", "shortllm", "eval", "-m", str(tiny_lm_dir), "--tasks", "piqa", "--ppl", "none",
         "--data-dir", str(data_root), "--limit", "2", "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "piqa (acc)" in result.stdout
    assert result.stderr == "", result.stderr


def test_lm_evals_warning_about_our_own_tasks_is_dropped(caplog):
    """With --data-dir shortllm's seven task files replace lm-eval's on purpose; a user's --include-path still warns."""
    caplog.set_level(logging.WARNING, logger="lm_eval.tasks._index")
    logger = logging.getLogger("lm_eval.tasks._index")
    message = "Task '%s' from %s overrides existing task from %s"
    with _own_overrides_unlogged():
        logger.warning(message, "piqa", TASKS_DIR / "piqa.yaml", "/lm_eval/tasks/piqa/piqa.yaml")
        logger.warning(message, "piqa", "/home/me/tasks/piqa.yaml", "/lm_eval/tasks/piqa/piqa.yaml")
    logger.warning(message, "boolq", TASKS_DIR / "boolq.yaml", "/lm_eval/tasks/boolq.yaml")  # outside: kept
    assert [r.args[1] for r in caplog.records] == ["/home/me/tasks/piqa.yaml", TASKS_DIR / "boolq.yaml"]
