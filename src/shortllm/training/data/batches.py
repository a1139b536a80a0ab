"""The order in which optimizer steps visit the training rows, in memory or from a stream.

In memory, the batch order is a pure function of the seed and the step: epoch ``e`` visits the training rows in
the order ``randperm(n, seed + e)``; step ``s`` takes the next ``global_batch`` rows of that endless stream, and
resuming at step ``s`` needs no saved data position beyond ``s`` itself.

With ``--streaming`` (plain text larger than memory) the documents are read and packed lazily, in corpus order,
optionally shuffled within windows of ``--shuffle-window`` blocks, and each step takes the next ``global_batch``
blocks; the stream position (epoch, window start, index in the window) is saved in every checkpoint.

Either way process ``r`` of ``W`` takes, in micro-step ``m``, the rows ``m*b*W + r*b ... + b - 1`` of the step's
batch, so the same global batch reaches the optimizer whatever the number of processes, without overlap.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

from shortllm.data.sampling import StreamPosition
from shortllm.errors import DataError, TrainingError
from shortllm.training.data.rows import IGNORE, Rows, TokenStream, TrainData
from shortllm.wording import plural

log = logging.getLogger(__name__)


class BatchOrder:
    """Which training rows each process uses in each micro-step (see the module docstring)."""

    def __init__(self, num_rows: int, seed: int, micro_batch: int, grad_accum: int, world_size: int):
        self.num_rows, self.seed = num_rows, seed
        self.micro_batch, self.grad_accum, self.world_size = micro_batch, grad_accum, world_size
        self.global_batch = micro_batch * grad_accum * world_size
        self._perms: dict[int, list[int]] = {}

    def _row(self, position: int) -> int:
        import torch

        epoch, offset = divmod(position, self.num_rows)
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._perms = {epoch: torch.randperm(self.num_rows, generator=gen).tolist()}
        return self._perms[epoch][offset]

    def step_rows(self, step: int) -> list[int]:
        """All rows of the global batch of ``step`` (0-based), in order."""
        start = step * self.global_batch
        return [self._row(p) for p in range(start, start + self.global_batch)]

    def micro_rows(self, step: int, micro: int, rank: int) -> list[int]:
        """The rows process ``rank`` uses in micro-step ``micro`` of ``step``."""
        return self.step_rows(step)[micro_slice(micro, rank, self.micro_batch, self.world_size)]


def micro_slice(micro: int, rank: int, micro_batch: int, world_size: int) -> slice:
    """The part of a step's global batch that process ``rank`` uses in micro-step ``micro``."""
    start = (micro * world_size + rank) * micro_batch
    return slice(start, start + micro_batch)


class MemoryBatches:
    """Global batches of in-memory rows, in the seeded order of :class:`BatchOrder` (any step, any order)."""

    def __init__(self, rows: Rows, order: BatchOrder):
        self.rows, self.order = rows, order

    def step(self, step: int) -> Rows:
        return self.rows.subset(self.order.step_rows(step))

    def position(self) -> dict[str, Any]:
        return {}  # the step is the position

    def seek(self, step: int, position: dict[str, Any] | None) -> None:
        pass


class StreamBatches:
    """Global batches read from a :class:`TokenStream`; an epoch ends where the text does.

    The stream is read in windows of ``window`` blocks, each served in an order shuffled with a seed made of the
    run's seed, the epoch and where the window starts (``window`` 1: corpus order). The position after the last
    step served (epoch, the window's first document and token offset, the index inside the window) goes into
    each checkpoint; a resumed run re-reads that one window, skipping the documents before it without
    tokenizing them. Steps must be asked for in order (``step`` is only a check).
    """

    def __init__(self, stream: TokenStream, global_batch: int, seed: int = 0, window: int = 1):
        self.stream, self.global_batch, self.seed, self.window_size = stream, global_batch, seed, max(1, window)
        self.epoch, self.next_step = 0, 0
        self.window: list[list[int]] = []
        self.index = 0
        self.window_start = self.after = stream.start
        self._blocks = stream.blocks(stream.start)

    def _fill(self, start: StreamPosition) -> bool:
        """Read the window that starts at ``start`` (where ``self._blocks`` stands) and shuffle it."""
        import random

        self.window_start, self.window, self.index = start, [], 0
        for block, position in itertools.islice(self._blocks, self.window_size):
            self.window.append(block)
            self.after = position
        if self.window_size > 1:
            random.Random(f"{self.seed}:{self.epoch}:{start.doc}:{start.offset}").shuffle(self.window)
        return bool(self.window)

    def _next_block(self) -> list[int]:
        if self.index >= len(self.window) and not self._fill(self.after):
            self.epoch += 1  # end of the text: the next epoch starts where training starts
            self._blocks = self.stream.blocks(self.stream.start)
            if not self._fill(self.stream.start):
                raise DataError("the training stream has no block after the held-out ones",
                                "use more text, a shorter --seq-len or a lower --max-eval-rows")
        self.index += 1
        return self.window[self.index - 1]

    def step(self, step: int) -> Rows:
        import torch

        if step != self.next_step:
            raise RuntimeError(f"stream batches are read in order: asked for step {step}, at {self.next_step}")
        epoch = self.epoch
        rows = [torch.tensor(self._next_block(), dtype=torch.long) for _ in range(self.global_batch)]
        if self.epoch > 0 and step == 0:
            raise DataError(f"the training text gives fewer than {plural(self.global_batch, 'block')} of "
                            f"{self.stream.seq_len} tokens (after the held-out ones), one optimizer step's worth",
                            "use more text, a shorter --seq-len, a smaller batch or a lower --max-eval-rows")
        if self.epoch != epoch:
            log.info("the training text ended at step %d; epoch %d starts over", step, self.epoch)
        self.next_step = step + 1
        return Rows(rows, rows, [self.stream.seq_len - 1] * len(rows))

    def position(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "doc": self.window_start.doc, "offset": self.window_start.offset,
                "index": self.index, "step": self.next_step}

    def seek(self, step: int, position: dict[str, Any] | None) -> None:
        """Continue after ``step`` steps, at ``position`` (from a checkpoint).

        Raises:
            TrainingError: the checkpoint has no stream position for this step.
        """
        if step == 0:
            return
        if not position or position.get("step") != step or "index" not in position:
            raise TrainingError(f"--resume: the checkpoint at step {step} has no stream position",
                                "resume with the options the run was started with (--streaming included)")
        self.epoch, self.next_step = int(position["epoch"]), step
        start = StreamPosition(int(position["doc"]), int(position["offset"]))
        self._blocks = self.stream.blocks(start)
        self._fill(start)
        self.index = int(position["index"])


def make_batches(data: TrainData, seed: int, micro_batch: int, grad_accum: int,
                 world_size: int) -> MemoryBatches | StreamBatches:
    """The batch source of a run: seeded shuffled rows in memory, or the stream in (window-shuffled) order."""
    if isinstance(data.train, TokenStream):
        return StreamBatches(data.train, micro_batch * grad_accum * world_size, seed, data.train.shuffle_window)
    return MemoryBatches(data.train, BatchOrder(len(data.train), seed, micro_batch, grad_accum, world_size))


def collate(rows: Rows, idx: list[int], pad_id: int) -> dict[str, Any]:
    """Right-pad the chosen rows to the longest; padding gets label IGNORE and attention mask 0."""
    import torch

    length = max(len(rows.input_ids[i]) for i in idx)
    ids = torch.full((len(idx), length), pad_id, dtype=torch.long)
    labels = torch.full((len(idx), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(idx), length), dtype=torch.long)
    for j, i in enumerate(idx):
        n = len(rows.input_ids[i])
        ids[j, :n], labels[j, :n], mask[j, :n] = rows.input_ids[i], rows.labels[i], 1
    batch = {"input_ids": ids, "labels": labels}
    if not bool(mask.all()):
        batch["attention_mask"] = mask
    return batch


def plan_steps(num_rows: int, global_batch: int, mean_row_tokens: float, max_steps: int | None,
               max_tokens: int | None) -> int:
    """Number of optimizer steps: ``max_steps``, else enough for ``max_tokens``, else one pass over the rows."""
    if max_steps is not None:
        return max_steps
    if max_tokens is not None:
        return max(1, math.ceil(max_tokens / (global_batch * mean_row_tokens)))
    return max(1, num_rows // global_batch)
