"""Training rows: packed plain text or Alpaca instruction records (prompt masked), a held-out split, and the
deterministic order in which global batches visit them.

Plain text is packed with :func:`shortllm.data.pack_documents` (documents in order, EOS between them, cut into
``seq_len`` blocks). Instruction records are ``{"instruction", "input" (optional), "output"}`` objects in a
``.json`` list or ``.jsonl`` file; each becomes the Stanford Alpaca prompt followed by the output and EOS, and
only the output and EOS tokens count in the loss.

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

import hashlib
import itertools
import json
import logging
import math
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shortllm.data import load_documents, pack_documents
from shortllm.data.sampling import StreamPosition, iter_blocks
from shortllm.errors import DataError, TrainingError
from shortllm.training.config import DataOptions

log = logging.getLogger(__name__)

IGNORE = -100  # label of a token that is not predicted (prompt, padding)

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass
class Rows:
    """Token rows of one split: ``input_ids[i]`` and ``labels[i]`` are 1-D long tensors of equal length."""

    input_ids: list[Any]
    labels: list[Any]
    targets: list[int] = field(default_factory=list)  # predicted tokens per row (labels[1:] != IGNORE)

    def __post_init__(self) -> None:
        if not self.targets:
            self.targets = [int((lab[1:] != IGNORE).sum()) for lab in self.labels]

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, idx: list[int]) -> Rows:
        return Rows([self.input_ids[i] for i in idx], [self.labels[i] for i in idx], [self.targets[i] for i in idx])

    @property
    def num_tokens(self) -> int:
        return sum(len(x) for x in self.input_ids)


@dataclass
class TokenStream:
    """Training text read lazily (``--streaming``): packed blocks of a document stream, from ``start`` on.

    ``start`` is where training begins in every epoch: after the held-out blocks taken from the stream's head.
    """

    documents: Any  # shortllm.data.DocumentStream
    tokenizer: Any
    seq_len: int
    start: StreamPosition
    shuffle_window: int = 1  # blocks read, then served in a seeded random order (1: corpus order)

    def blocks(self, position: StreamPosition) -> Iterator[tuple[list[int], StreamPosition]]:
        return iter_blocks(self.tokenizer, self.documents, self.seq_len, start=position)


@dataclass
class TrainData:
    """The training rows (in memory, or a stream of packed text) and the held-out rows, with their
    provenance (for the manifest)."""

    train: Rows | TokenStream
    eval: Rows
    kind: str  # "text" | "instruction"
    fingerprint: str
    info: dict[str, Any]

    @property
    def streaming(self) -> bool:
        return isinstance(self.train, TokenStream)


# ----------------------------------------------------------------------------------------------- reading


def _looks_like_instructions(spec: str, root: Path | None) -> bool:
    """auto format: a .json/.jsonl file whose first record has an ``instruction`` field."""
    path = Path(spec).expanduser()
    if not path.exists() and root is not None and (root / spec).exists():
        path = root / spec
    if not path.is_file() or path.suffix.lower() not in (".json", ".jsonl"):
        return False
    try:
        with path.open(encoding="utf-8") as f:
            head = f.read(1 << 16).lstrip()
    except (OSError, UnicodeDecodeError):
        return False
    if head.startswith("["):
        head = head[1:].lstrip()
    return head.startswith("{") and '"instruction"' in head.split("}", 1)[0]


def read_instructions(path: Path) -> list[dict[str, str]]:
    """Read Alpaca records from a ``.json`` list or a ``.jsonl`` file.

    Raises:
        DataError: unreadable file, invalid JSON, or a record without ``instruction``/``output`` strings
            (naming the line of a .jsonl file or the item of a .json list).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}", "give a UTF-8 .json or .jsonl file") from err
    records: list[tuple[str, Any]] = []
    try:
        data = json.loads(text)
        rows = data if isinstance(data, list) else [data]
        records = [(f"{path} item {i}", r) for i, r in enumerate(rows)]
    except json.JSONDecodeError:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number} is not valid JSON ({err.msg})",
                                "write one JSON object per line, or one JSON list") from err
    out = []
    for where, rec in records:
        if not isinstance(rec, dict):
            raise DataError(f"{where} is a {type(rec).__name__}, not an object with instruction/output fields",
                            "write Alpaca records: {\"instruction\": ..., \"input\": ..., \"output\": ...}")
        for key in ("instruction", "output"):
            if not isinstance(rec.get(key), str):
                what = "has no" if key not in rec else "has a non-string"
                raise DataError(f"{where} {what} '{key}' field",
                                "every record needs 'instruction' and 'output' strings ('input' is optional)")
        if "input" in rec and rec["input"] is not None and not isinstance(rec["input"], str):
            raise DataError(f"{where} has a non-string 'input' field", "make 'input' a string or leave it out")
        out.append({"instruction": rec["instruction"], "input": rec.get("input") or "", "output": rec["output"]})
    if not out:
        raise DataError(f"{path} holds no instruction records", "give at least one record")
    return out


def format_prompt(record: dict[str, str]) -> str:
    """The Stanford Alpaca prompt of a record (the part masked from the loss)."""
    template = PROMPT_WITH_INPUT if record.get("input") else PROMPT_NO_INPUT
    return template.format(instruction=record["instruction"], input=record.get("input", ""))


def instruction_rows(tokenizer: Any, records: list[dict[str, str]], seq_len: int) -> tuple[Rows, int]:
    """Tokenize records as prompt + output + EOS, labels IGNORE on the prompt; truncate to ``seq_len``.

    Returns:
        The rows (records whose output is cut off entirely are dropped) and the number dropped.
    """
    import torch

    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token", "instruction data needs one to end each response")
    bos = tokenizer.bos_token_id if getattr(tokenizer, "add_bos_token", False) else None
    prompts = tokenizer([format_prompt(r) for r in records], add_special_tokens=False, verbose=False)["input_ids"]
    answers = tokenizer([r["output"] for r in records], add_special_tokens=False, verbose=False)["input_ids"]
    ids, labels, dropped = [], [], 0
    for p, a in zip(prompts, answers):
        prompt = ([bos] if bos is not None else []) + list(p)
        answer = list(a) + [eos]
        full = (prompt + answer)[:seq_len]
        lab = ([IGNORE] * len(prompt) + answer)[:seq_len]
        if len(full) < 2 or all(x == IGNORE for x in lab[1:]):
            dropped += 1
            continue
        ids.append(torch.tensor(full, dtype=torch.long))
        labels.append(torch.tensor(lab, dtype=torch.long))
    return Rows(ids, labels), dropped


def text_rows(tokenizer: Any, corpus: Any, seq_len: int) -> Rows:
    """Pack a corpus into ``seq_len`` blocks; every token is a target."""
    blocks = pack_documents(tokenizer, corpus, seq_len)
    rows = list(blocks.unbind(0))
    return Rows(rows, rows, [seq_len - 1] * len(rows))


def _records_fingerprint(records: list[dict[str, str]]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r["instruction"], r["input"], r["output"]]).encode())
    return h.hexdigest()[:16]


def _load_split(tokenizer: Any, spec: str, opts: DataOptions, seq_len: int, split: str) -> tuple[Rows, str, dict]:
    from shortllm.data import data_dir

    root = data_dir(opts.data_dir)
    kind = opts.format
    if kind == "auto":
        kind = "instruction" if _looks_like_instructions(spec, root) else "text"
    if kind == "instruction":
        path = Path(spec).expanduser()
        if not path.exists() and root is not None and (root / spec).exists():
            path = root / spec
        if not path.is_file():
            raise DataError(f"no such instruction file: {spec}", "give a .json or .jsonl file of Alpaca records")
        records = read_instructions(path)
        rows, dropped = instruction_rows(tokenizer, records, seq_len)
        if not len(rows):
            raise DataError(f"no record of {path} keeps any response token within --seq-len {seq_len} "
                            "(the prompts fill it)", "raise --seq-len")
        if dropped:
            log.warning("%d of %d instruction records have no response tokens within --seq-len %d: dropped",
                        dropped, len(records), seq_len)
        info = {"spec": spec, "format": "instruction", "source": str(path), "records": len(records),
                "dropped": dropped, "fingerprint": _records_fingerprint(records)}
        return rows, kind, info
    corpus = load_documents(spec, split, data_dir=opts.data_dir, text_field=opts.text_field)
    rows = text_rows(tokenizer, corpus, seq_len)
    info = {"spec": spec, "format": "text", "source": corpus.source, "name": corpus.name, "split": corpus.split,
            "documents": len(corpus), "fingerprint": corpus.fingerprint()}
    return rows, kind, info


def load_train_data(tokenizer: Any, opts: DataOptions, seq_len: int) -> TrainData:
    """Read, tokenize and split the training data.

    The held-out rows are ``--eval-data`` (at most ``max_eval_rows``) or the last ``eval_fraction`` of the
    training rows (at least 1, at most ``max_eval_rows``): for packed text that is the end of the corpus.

    Raises:
        DataError: missing or malformed data, or too little text for one block.
    """
    if tokenizer is None:
        raise DataError("the model has no tokenizer, so text cannot be turned into tokens",
                        "use a model folder that includes its tokenizer files")
    if opts.streaming:
        return _load_stream(tokenizer, opts, seq_len)
    rows, kind, info = _load_split(tokenizer, opts.data, opts, seq_len, "train")
    if opts.eval_data:
        eval_rows, _, eval_info = _load_split(tokenizer, opts.eval_data, opts, seq_len, "validation")
        eval_rows = eval_rows.subset(list(range(min(len(eval_rows), opts.max_eval_rows))))
        train = rows
    else:
        n_eval = 0 if opts.eval_fraction == 0 else min(opts.max_eval_rows, max(1, round(opts.eval_fraction * len(rows))))
        if n_eval and len(rows) - n_eval < 1:
            raise DataError(f"{opts.data} gives only {len(rows)} row(s) of at most {seq_len} tokens, too few to hold "
                            "some out for evaluation", "use more text, a shorter --seq-len, or --eval-fraction 0")
        train = rows.subset(list(range(len(rows) - n_eval)))
        eval_rows = rows.subset(list(range(len(rows) - n_eval, len(rows))))
        eval_info = {"held_out_from_train": True, "rows": n_eval}
    fp = hashlib.sha256(json.dumps([info["fingerprint"], eval_info.get("fingerprint"), kind]).encode()).hexdigest()
    info["source_fingerprint"] = info.pop("fingerprint")
    info.update(streaming=False, fingerprint=fp[:16], rows=len(rows), train_rows=len(train), train_tokens=train.num_tokens,
                eval_rows=len(eval_rows), eval=eval_info)
    return TrainData(train, eval_rows, kind, fp[:16], info)


def _head_rows(stream: TokenStream, n: int, spec: str, exact: bool = True) -> tuple[Rows, StreamPosition]:
    """The first ``n`` blocks of a stream as rows (fewer only if not ``exact``), and the position after them."""
    import torch

    blocks, position = [], stream.start
    with closing(stream.blocks(stream.start)) as head:
        for block, position in itertools.islice(head, n):
            blocks.append(torch.tensor(block, dtype=torch.long))
    if len(blocks) < n and (exact or not blocks):
        raise DataError(f"{spec} gives only {len(blocks)} block(s) of {stream.seq_len} tokens, fewer than the "
                        f"{n} held out for evaluation", "use more text, a shorter --seq-len or a lower --max-eval-rows")
    return Rows(blocks, blocks, [stream.seq_len - 1] * len(blocks)), position


def _load_stream(tokenizer: Any, opts: DataOptions, seq_len: int) -> TrainData:
    """``--streaming``: plain text read lazily; the held-out rows are ``--eval-data``'s first blocks, else the
    training stream's first ``max_eval_rows`` blocks (then skipped by training in every epoch)."""
    from shortllm.data import data_dir, stream_documents

    if tokenizer is None:
        raise DataError("the model has no tokenizer, so text cannot be turned into tokens",
                        "use a model folder that includes its tokenizer files")
    if opts.format == "auto" and _looks_like_instructions(opts.data, data_dir(opts.data_dir)):
        raise DataError(f"{opts.data} holds instruction records, and --streaming reads plain text",
                        "drop --streaming for Alpaca files (they are small), or pass --format text")
    docs = stream_documents(opts.data, "train", data_dir=opts.data_dir, text_field=opts.text_field)
    stream = TokenStream(docs, tokenizer, seq_len, StreamPosition(), opts.shuffle_window)
    n_eval = 0 if opts.eval_fraction == 0 and not opts.eval_data else opts.max_eval_rows
    if opts.eval_data:
        eval_docs = stream_documents(opts.eval_data, "validation", data_dir=opts.data_dir, text_field=opts.text_field)
        eval_rows, _ = _head_rows(TokenStream(eval_docs, tokenizer, seq_len, StreamPosition()), n_eval,
                                  opts.eval_data, exact=False)
        eval_info = {"spec": opts.eval_data, "source": eval_docs.source, "split": eval_docs.split,
                     "rows": len(eval_rows), "fingerprint": eval_docs.fingerprint()}
    else:
        eval_rows, stream.start = _head_rows(stream, n_eval, opts.data)
        eval_info = {"held_out_from_train": True, "rows": n_eval, "position": "head of the stream"}
    source_fp = docs.fingerprint()
    fp = hashlib.sha256(json.dumps([source_fp, eval_info.get("fingerprint"), "text", "streaming", n_eval,
                                    opts.shuffle_window]).encode())
    info = {"spec": opts.data, "format": "text", "streaming": True, "shuffle_window": opts.shuffle_window,
            "source": docs.source, "name": docs.name,
            "split": docs.split, "source_fingerprint": source_fp, "fingerprint": fp.hexdigest()[:16],
            "rows": None, "train_rows": None, "train_tokens": None, "eval_rows": len(eval_rows), "eval": eval_info}
    return TrainData(stream, eval_rows, "text", info["fingerprint"], info)


# ------------------------------------------------------------------------------------------- batch order


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
            raise DataError(f"the training text gives fewer than {self.global_batch} blocks of "
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
