"""shortllm's offline lm-eval task definitions: one YAML per task in this folder, readers in ``utils``.

They are used instead of lm-eval's own definitions when a data directory is given, and read the files named in
:data:`FILES` from it. Prompts, choices and metrics are lm-eval's (see each YAML); only where the data comes
from differs.
"""

from __future__ import annotations

from pathlib import Path

from shortllm.evaluation.tasks.utils import READERS

TASKS_DIR = Path(__file__).parent

# The zero-shot tasks of Shortened LLaMA, in the paper's column order.
PAPER_TASKS: tuple[str, ...] = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                                "openbookqa")
# The metric the paper reports for each (acc_norm where lm-eval's length-normalised accuracy is the custom).
PAPER_METRIC: dict[str, str] = {"boolq": "acc", "piqa": "acc", "winogrande": "acc", "arc_easy": "acc",
                                "hellaswag": "acc_norm", "arc_challenge": "acc_norm", "openbookqa": "acc_norm"}
OFFLINE_TASKS: tuple[str, ...] = tuple(READERS)
FILES: dict[str, tuple[str, ...]] = {
    "boolq": ("boolq/dev.jsonl",),
    "piqa": ("piqa/valid.jsonl", "piqa/valid-labels.lst"),
    "hellaswag": ("hellaswag/hellaswag_val_full.txt",),
    "winogrande": ("winogrande/dev.jsonl",),
    "arc_easy": ("arc/ARC-Easy-Test.jsonl",),
    "arc_challenge": ("arc/ARC-Challenge-Test.jsonl",),
    "openbookqa": ("openbookqa/test.jsonl",),
}


def check_offline_task(name: str, root: Path) -> int:
    """Read and check one offline task's files under ``root``; returns the number of items.

    Raises:
        DataError: a missing file (named) or a malformed one (file and line named).
    """
    return len(READERS[name](root))


__all__ = ["FILES", "OFFLINE_TASKS", "PAPER_METRIC", "PAPER_TASKS", "TASKS_DIR", "check_offline_task"]
