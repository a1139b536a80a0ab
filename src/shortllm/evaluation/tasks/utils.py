"""Readers for the offline task definitions (the YAML files beside this module).

Each reader turns the files of one task in the data directory (the layout of docs/eval.md) into rows shaped like
the Hugging Face dataset lm-eval's own task reads, so that the YAML can use lm-eval's prompts and choices
unchanged. Every reader raises :class:`DataError` naming the file and line of anything it cannot read.

lm-eval calls the ``load_*`` functions as ``custom_dataset`` with the TaskManager's metadata as keyword
arguments; shortllm passes the data directory as ``shortllm_data_dir``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from shortllm.errors import DataError
from shortllm.wording import plural

DATA_DIR_KEY = "shortllm_data_dir"
ARC_LABELS = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "E"}  # a few ARC items number their choices


def _malformed(path: Path, line: int | None, what: str) -> DataError:
    where = f"{path}:{line}" if line else str(path)
    return DataError(f"{where} is malformed: {what}", "replace it with the original file (layout in docs/eval.md)")


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"task file {path} not found", "add it (layout in docs/eval.md), or drop --data-dir to "
                        "let lm-eval download the task")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise _malformed(path, None, f"cannot read it as UTF-8 text ({err})") from err


def _jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise _malformed(path, number, f"not JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise _malformed(path, number, "not a JSON object")
        rows.append((number, row))
    if not rows:
        raise _malformed(path, None, "no items")
    return rows


def _need(row: dict, path: Path, number: int, *keys: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise _malformed(path, number, f"no {', '.join(repr(k) for k in missing)} field")


def read_piqa(root: Path) -> list[dict[str, Any]]:
    """``piqa/valid.jsonl`` + the line-aligned ``piqa/valid-labels.lst`` -> ``{goal, sol1, sol2, label}``."""
    path, labels_path = root / "piqa" / "valid.jsonl", root / "piqa" / "valid-labels.lst"
    rows = _jsonl(path)
    labels = [s.strip() for s in _lines(labels_path) if s.strip()]
    if len(labels) != len(rows):
        raise _malformed(labels_path, None,
                         f"{plural(len(labels), 'label')} for {plural(len(rows), 'item')} in {path.name}")
    out = []
    for (number, row), label in zip(rows, labels):
        _need(row, path, number, "goal", "sol1", "sol2")
        if label not in ("0", "1"):
            raise _malformed(labels_path, number, f"label {label!r} is not 0 or 1")
        out.append({"goal": row["goal"], "sol1": row["sol1"], "sol2": row["sol2"], "label": int(label)})
    return out


def read_boolq(root: Path) -> list[dict[str, Any]]:
    """``boolq/dev.jsonl`` -> ``{question, passage, label}`` (label 1 = yes, as super_glue's)."""
    path = root / "boolq" / "dev.jsonl"
    out = []
    for number, row in _jsonl(path):
        _need(row, path, number, "question", "passage", "answer")
        if not isinstance(row["answer"], bool):
            raise _malformed(path, number, "'answer' is not true or false")
        out.append({"question": row["question"], "passage": row["passage"], "label": int(row["answer"])})
    return out


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag text clean-up (strip, ``[title]`` -> ``.``, drop any ``[...]``, squeeze spaces)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


# The last sentence end of a context line, followed by a tail without one: ActivityNet's ctx_b fragment.
_CTX_B = re.compile(r"[.!?] (?=[^.!?]*$)")


def hellaswag_query(line: str) -> str:
    """lm-eval's HellaSwag query from the derived text file's context line.

    lm-eval builds ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``; the file holds
    ``label + ": " + ctx_a + " " + ctx_b`` with ctx_b as it was. ctx_b is the unfinished sentence the endings
    complete, so a context that does not end a sentence has it after its last sentence end (``". he"`` ->
    ``". He"``); one that ends a sentence has an empty ctx_b (WikiHow items) and is kept. On the 10042 validation
    items 3243 contexts end mid-sentence (3236 of them change; the other 7 tails start with a digit or a quote) and
    6799 end a sentence. A ctx_b holding a sentence end of its own (``"mr. smith"``) would be cut at the wrong place.
    """
    text = line.strip()
    if text[-1:] not in (".", "!", "?"):
        tail = _CTX_B.search(text)
        if tail is not None:
            text = text[:tail.end()] + text[tail.end():].capitalize()
    return hellaswag_preprocess(text)


def read_hellaswag(root: Path) -> list[dict[str, Any]]:
    """``hellaswag/hellaswag_val_full.txt`` (6 lines per item: context, gold 0-3, four endings) ->
    ``{query, choices, label}`` as lm-eval's ``process_docs`` builds them (:func:`hellaswag_query`: ctx_b
    capitalised; lm-eval's clean-up on top of the file's own)."""
    path = root / "hellaswag" / "hellaswag_val_full.txt"
    lines = _lines(path)
    if not lines or len(lines) % 6:
        raise _malformed(path, None,
                         f"{plural(len(lines), 'line')}, not a multiple of 6 (context, label, 4 endings)")
    out = []
    for i in range(0, len(lines), 6):
        label = lines[i + 1].strip()
        if label not in ("0", "1", "2", "3"):
            raise _malformed(path, i + 2, f"gold label {label!r} is not 0-3")
        out.append({"query": hellaswag_query(lines[i]),
                    "choices": [hellaswag_preprocess(e) for e in lines[i + 2:i + 6]], "label": int(label)})
    return out


def read_winogrande(root: Path) -> list[dict[str, Any]]:
    """``winogrande/dev.jsonl`` -> ``{sentence, option1, option2, answer}`` (the HF winogrande_xl rows)."""
    path = root / "winogrande" / "dev.jsonl"
    out = []
    for number, row in _jsonl(path):
        _need(row, path, number, "sentence", "option1", "option2", "answer")
        if "_" not in row["sentence"] or str(row["answer"]) not in ("1", "2"):
            raise _malformed(path, number, "no '_' blank in the sentence, or an answer other than 1 or 2")
        out.append({k: str(row[k]) for k in ("sentence", "option1", "option2", "answer")})
    return out


def _arc_like(path: Path, question_key: str) -> list[dict[str, Any]]:
    """Official ARC / OpenBookQA rows -> the HF shape ``{id, <question_key>, choices{text,label}, answerKey}``."""
    out = []
    for number, row in _jsonl(path):
        _need(row, path, number, "question", "answerKey")
        q = row["question"]
        try:
            stem, choices = q["stem"], q["choices"]
            texts = [c["text"] for c in choices]
            labels = [ARC_LABELS.get(str(c["label"]), str(c["label"])) for c in choices]
        except (KeyError, TypeError) as err:
            raise _malformed(path, number, "'question' needs 'stem' and 'choices' of {text, label}") from err
        key = ARC_LABELS.get(str(row["answerKey"]).strip(), str(row["answerKey"]).strip())
        if key not in labels:
            raise _malformed(path, number, f"answerKey {row['answerKey']!r} is not one of the choice labels")
        out.append({"id": str(row.get("id", number)), question_key: stem,
                    "choices": {"text": texts, "label": labels}, "answerKey": key})
    return out


def read_arc_easy(root: Path) -> list[dict[str, Any]]:
    """``arc/ARC-Easy-Test.jsonl`` -> HF ``ai2_arc`` rows."""
    return _arc_like(root / "arc" / "ARC-Easy-Test.jsonl", "question")


def read_arc_challenge(root: Path) -> list[dict[str, Any]]:
    """``arc/ARC-Challenge-Test.jsonl`` -> HF ``ai2_arc`` rows."""
    return _arc_like(root / "arc" / "ARC-Challenge-Test.jsonl", "question")


def read_openbookqa(root: Path) -> list[dict[str, Any]]:
    """``openbookqa/test.jsonl`` -> HF ``openbookqa`` (main) rows (``question_stem``)."""
    return _arc_like(root / "openbookqa" / "test.jsonl", "question_stem")


# --- lm-eval entry points: custom_dataset and winogrande's doc functions ------------------------------------

def _dataset(reader, split: str, meta: dict[str, Any]):
    import datasets

    root = meta.get(DATA_DIR_KEY)
    if not root:
        raise DataError("shortllm's offline tasks need a data directory", "pass --data-dir")
    return datasets.DatasetDict({split: datasets.Dataset.from_list(reader(Path(root)))})


def load_piqa(**meta):
    return _dataset(read_piqa, "validation", meta)


def load_boolq(**meta):
    return _dataset(read_boolq, "validation", meta)


def load_hellaswag(**meta):
    return _dataset(read_hellaswag, "validation", meta)


def load_winogrande(**meta):
    return _dataset(read_winogrande, "validation", meta)


def load_arc_easy(**meta):
    return _dataset(read_arc_easy, "test", meta)


def load_arc_challenge(**meta):
    return _dataset(read_arc_challenge, "test", meta)


def load_openbookqa(**meta):
    return _dataset(read_openbookqa, "test", meta)


def winogrande_gold(doc: dict) -> int:
    """The gold option's index (lm-eval's multiple-input convention: the 'text' of the doc is an index)."""
    return {"1": 0, "2": 1}[doc["answer"]]


def winogrande_continuation(doc: dict) -> str:
    """The part of the sentence after the blank: what the model scores after each filled-in context."""
    return doc["sentence"][doc["sentence"].index("_") + 1:].strip()


def winogrande_contexts(doc: dict) -> list[str]:
    """The sentence up to the blank, completed with each option."""
    head = doc["sentence"][:doc["sentence"].index("_")]
    return [head + doc["option1"], head + doc["option2"]]


READERS = {"piqa": read_piqa, "boolq": read_boolq, "hellaswag": read_hellaswag, "winogrande": read_winogrande,
           "arc_easy": read_arc_easy, "arc_challenge": read_arc_challenge, "openbookqa": read_openbookqa}
