"""Training rows: packed plain text or Alpaca instruction records (prompt masked), and a held-out split.

Plain text is packed with :func:`shortllm.data.pack_documents` (documents in order, EOS between them, cut into
``seq_len`` blocks), or, with ``--streaming``, read lazily as a :class:`TokenStream` of packed blocks. Instruction
records are ``{"instruction", "input" (optional), "output"}`` objects in a ``.json`` list or ``.jsonl`` file; each
becomes the Stanford Alpaca prompt followed by the output, tokenized as one text with the tokenizer's own special
tokens, then EOS; only the tokens after the prompt's length count in the loss. The order in which steps visit the
rows is :mod:`shortllm.training.data.batches`'.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shortllm.data import load_documents, pack_documents
from shortllm.data.sampling import StreamPosition, iter_blocks
from shortllm.errors import DataError
from shortllm.training.config import DataOptions
from shortllm.wording import plural

log = logging.getLogger(__name__)

IGNORE = -100  # label of a token that is not predicted (prompt, padding)
AUTO_EVAL_ROWS = (4, 32)  # held-out rows when --max-eval-rows is not given: a tenth of the run's rows, within these

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
    """Tokenize records as one text, prompt + output, with the tokenizer's own special tokens, then EOS; labels
    IGNORE on the prompt's tokens; truncate to ``seq_len``.

    As Alpaca-LoRA's ``generate_and_tokenize_prompt`` (the Shortened LLaMA LoRA retraining): the full text is
    tokenized at once, so the response goes on where the prompt ends (a SentencePiece tokenizer gives it no extra
    word-boundary token, as tokenizing it alone would), and a BOS comes wherever the tokenizer puts one, a
    post-processor's included (Llama-3 style tokenizers, whose ``add_bos_token`` reads False). The loss mask covers
    as many tokens as the prompt alone tokenizes to (its own special tokens included, a trailing EOS excluded).
    EOS ends every row unless the tokenizer already put it there.

    Returns:
        The rows (records whose output is cut off entirely are dropped) and the number dropped.

    Raises:
        DataError: a tokenizer without an EOS token.
    """
    import torch

    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token", "instruction data needs one to end each response")
    prompts = [format_prompt(r) for r in records]
    fulls = tokenizer([p + r["output"] for p, r in zip(prompts, records)], verbose=False)["input_ids"]
    prompt_ids = tokenizer(prompts, verbose=False)["input_ids"]
    ids, labels, dropped = [], [], 0
    for p, f in zip(prompt_ids, fulls):
        p, f = list(p), list(f)
        if p and p[-1] == eos:  # a post-processor that ends every text with EOS: the prompt goes on
            p = p[:-1]
        if not f or f[-1] != eos:
            f = f + [eos]
        n_prompt = min(len(p), len(f))
        full = f[:seq_len]
        lab = ([IGNORE] * n_prompt + f[n_prompt:])[:seq_len]
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


def eval_rows_for(planned_rows: int | None, given: int | None) -> int:
    """The most held-out rows of a run: ``--max-eval-rows`` when given, else a tenth of the rows the run will
    train on, between 4 and 32 (32 when unknown), so a short run does not spend longer evaluating than training."""
    if given is not None:
        return given
    if planned_rows is None:
        return AUTO_EVAL_ROWS[1]
    return min(AUTO_EVAL_ROWS[1], max(AUTO_EVAL_ROWS[0], -(-planned_rows // 10)))


def load_train_data(tokenizer: Any, opts: DataOptions, seq_len: int, planned_rows: int | None = None) -> TrainData:
    """Read, tokenize and split the training data.

    The held-out rows are ``--eval-data`` (at most ``max_eval_rows``) or the last ``eval_fraction`` of the
    training rows (at least 1, at most ``max_eval_rows``): for packed text that is the end of the corpus.
    ``max_eval_rows`` None sizes it to the run (:func:`eval_rows_for` of ``planned_rows``, the rows the planned
    steps will read).

    Raises:
        DataError: missing or malformed data, or too little text for one block.
    """
    if tokenizer is None:
        raise DataError("the model has no tokenizer, so text cannot be turned into tokens",
                        "use a model folder that includes its tokenizer files")
    from dataclasses import replace

    opts = replace(opts, max_eval_rows=eval_rows_for(planned_rows, opts.max_eval_rows))
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
            raise DataError(f"{opts.data} gives only {plural(len(rows), 'row')} of at most {seq_len} tokens, "
                            "too few to hold some out for evaluation", "use more text, a shorter --seq-len, or --eval-fraction 0")
        train = rows.subset(list(range(len(rows) - n_eval)))
        eval_rows = rows.subset(list(range(len(rows) - n_eval, len(rows))))
        eval_info = {"held_out_from_train": True, "rows": n_eval}
    fp = hashlib.sha256(json.dumps([info["fingerprint"], eval_info.get("fingerprint"), kind]).encode()).hexdigest()
    info["source_fingerprint"] = info.pop("fingerprint")
    info.update(streaming=False, fingerprint=fp[:16], rows=len(rows), train_rows=len(train),
                train_tokens=train.num_tokens, eval_rows=len(eval_rows), eval=eval_info)
    return TrainData(train, eval_rows, kind, fp[:16], info)


def _head_rows(stream: TokenStream, n: int, spec: str, exact: bool = True) -> tuple[Rows, StreamPosition]:
    """The first ``n`` blocks of a stream as rows (fewer only if not ``exact``), and the position after them."""
    import torch

    blocks, position = [], stream.start
    with closing(stream.blocks(stream.start)) as head:
        for block, position in itertools.islice(head, n):
            blocks.append(torch.tensor(block, dtype=torch.long))
    if len(blocks) < n and (exact or not blocks):
        raise DataError(f"{spec} gives only {plural(len(blocks), 'block')} of {stream.seq_len} tokens, "
                        f"fewer than the {n} held out for evaluation", "use more text, a shorter --seq-len or a lower --max-eval-rows")
    return Rows(blocks, blocks, [stream.seq_len - 1] * len(blocks)), position


def _load_stream(tokenizer: Any, opts: DataOptions, seq_len: int) -> TrainData:
    """``--streaming``: plain text read lazily; the held-out rows are ``--eval-data``'s first blocks, else the
    training stream's first ``max_eval_rows`` blocks (then skipped by training in every epoch)."""
    from shortllm.data import data_dir, stream_documents

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
