"""Small local copies of the evaluation data (the /work/shared/data layout) and a tiny model that reads text.

Task records are written first in the shape of the Hugging Face datasets lm-eval's own tasks read
(``hf_rows``), then in the official release layout shortllm's offline tasks read (``write_task``), so a test
can run both definitions on the same items.
"""

from __future__ import annotations

import json
from pathlib import Path

WIKI_LINES = [
    " \n", " = Robert Boulter = \n", " \n",
    (" Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring role on the "
    "television series The Bill in 2000 . This was followed by a starring role in the play Herons written by Simon "
    "Stephens , which was performed in 2001 at the Royal Court Theatre . \n"), " \n",
    " = = Career = = \n", " \n",
    (" In 2006 , Boulter starred alongside Whishaw in the play Citizenship written by Mark Ravenhill . He appeared on "
    "a 2006 episode of the television series , Doctors , followed by a role in the 2007 theatre production of How "
    "to Curse directed by Josie Rourke . How to Curse was performed at Bush Theatre in the London Borough of "
    "Hammersmith and Fulham . In 2008 he had a recurring role in the series Casualty . \n"), " \n",
    (" The river rises in the hills to the north of the town and flows south through farmland , woods and "
    "villages before it reaches the sea . Its valley was settled early , and mills were built along its banks "
    "in the eighteenth century to grind corn and later to spin cotton . \n"),
]
PTB_LINES = [" the company said it expects to report a loss for the third quarter \n",
             " mr. <unk> said the agreement will help the company reduce its debt \n",
             " the stock fell N cents to $ N in new york stock exchange composite trading \n",
             " analysts said the results were better than expected \n"] * 6

PIQA = [
    {"goal": "How do I keep bread fresh?", "sol1": "Store it in a sealed bag.", "sol2": "Leave it in the sun.",
     "label": 0},
    {"goal": "To open a jar with a tight lid,", "sol1": "freeze the jar.", "sol2": "run the lid under hot water.",
     "label": 1},
    {"goal": "Clean a dusty shelf", "sol1": "wipe it with a damp cloth", "sol2": "pour sand on it", "label": 0},
    {"goal": "How to cool soup quickly?", "sol1": "Put the pot in an ice bath.", "sol2": "Cover it with a blanket.",
     "label": 0},
    {"goal": "Make a paper plane fly further", "sol1": "crumple it", "sol2": "fold the wings evenly", "label": 1},
    {"goal": "Dry wet shoes", "sol1": "stuff them with newspaper", "sol2": "fill them with water", "label": 0},
]
ARC = [
    {"id": "a1", "question": "Which gas do plants take in for photosynthesis?",
     "choices": {"text": ["oxygen", "carbon dioxide", "helium", "neon"], "label": ["A", "B", "C", "D"]},
     "answerKey": "B"},
    {"id": "a2", "question": "What is the boiling point of water at sea level?",
     "choices": {"text": ["50 C", "100 C", "150 C"], "label": ["A", "B", "C"]}, "answerKey": "B"},
    {"id": "a3", "question": "Which planet is closest to the Sun?",
     "choices": {"text": ["Mercury", "Venus", "Earth", "Mars"], "label": ["1", "2", "3", "4"]}, "answerKey": "1"},
    {"id": "a4", "question": "What force pulls objects toward Earth?",
     "choices": {"text": ["magnetism", "friction", "gravity", "tension", "light"],
                 "label": ["A", "B", "C", "D", "E"]}, "answerKey": "C"},
]
WINOGRANDE = [
    {"sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
     "option1": "Sarah", "option2": "Maria", "answer": "2"},
    {"sentence": "The trophy does not fit into the suitcase because _ is too large.",
     "option1": "trophy", "option2": "suitcase", "answer": "1"},
    {"sentence": "John poured water from the bottle into the cup until _ was full.",
     "option1": "bottle", "option2": "cup", "answer": "2"},
    {"sentence": "The ball broke the window because _ was fragile.", "option1": "ball", "option2": "window",
     "answer": "2"},
]
BOOLQ = [
    {"question": "is the sun a star", "passage": "The Sun is the star at the centre of the Solar System.",
     "label": 1, "idx": 0},
    {"question": "is water dry", "passage": "Water is a liquid at room temperature.", "label": 0, "idx": 1},
    {"question": "do penguins fly", "passage": "Penguins are flightless birds that swim.", "label": 0, "idx": 2},
]
OPENBOOKQA = [
    {"id": "o1", "question_stem": "The sun is responsible for",
     "choices": {"text": ["puppies learning new tricks", "plants sprouting, blooming and wilting",
                          "children growing up", "flowers wilting in a vase"], "label": ["A", "B", "C", "D"]},
     "answerKey": "B"},
    {"id": "o2", "question_stem": "A magnet will stick to",
     "choices": {"text": ["a wooden table", "a steel spoon", "a glass cup", "a paper towel"],
                 "label": ["A", "B", "C", "D"]}, "answerKey": "B"},
]
HELLASWAG = [
    {"query": "Roof shingle removal: A man is sitting on a roof. he", "label": 3,
     "choices": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."]},
    {"query": "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. the lady", "label": 3,
     "choices": ["swings and lands in her arms.", "pulls the barbell forward.", "pulls a rope attached to the barbell.",
                 "stands and lifts the weight over her head."]},
]
HF_ROWS = {"piqa": PIQA, "arc_easy": ARC, "arc_challenge": ARC, "winogrande": WINOGRANDE, "boolq": BOOLQ,
           "openbookqa": OPENBOOKQA, "hellaswag": HELLASWAG}


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _official_arc(row: dict, question_key: str) -> dict:
    choices = [{"text": t, "label": lab} for t, lab in zip(row["choices"]["text"], row["choices"]["label"])]
    return {"id": row["id"], "question": {"stem": row[question_key], "choices": choices},
            "answerKey": row["answerKey"]}


def write_task(root: Path, name: str, rows: list[dict] | None = None) -> None:
    """Write one task's rows (HF shape) as the official files, in the data-directory layout."""
    rows = HF_ROWS[name] if rows is None else rows
    if name == "piqa":
        _jsonl(root / "piqa" / "valid.jsonl", [{k: r[k] for k in ("goal", "sol1", "sol2")} for r in rows])
        (root / "piqa" / "valid-labels.lst").write_text("".join(f"{r['label']}\n" for r in rows))
    elif name == "boolq":
        _jsonl(root / "boolq" / "dev.jsonl", [{"question": r["question"], "title": "t", "answer": bool(r["label"]),
                                               "passage": r["passage"]} for r in rows])
    elif name == "winogrande":
        _jsonl(root / "winogrande" / "dev.jsonl", [{"qID": str(i), **r} for i, r in enumerate(rows)])
    elif name in ("arc_easy", "arc_challenge"):
        part = "Easy" if name == "arc_easy" else "Challenge"
        _jsonl(root / "arc" / f"ARC-{part}-Test.jsonl", [_official_arc(r, "question") for r in rows])
    elif name == "openbookqa":
        _jsonl(root / "openbookqa" / "test.jsonl", [_official_arc(r, "question_stem") for r in rows])
    elif name == "hellaswag":
        path = root / "hellaswag" / "hellaswag_val_full.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{r['query']}\n{r['label']}\n" + "".join(f"{c}\n" for c in r["choices"])
                                for r in rows))
    else:
        raise ValueError(name)


def write_data_dir(root: Path) -> Path:
    """A data directory with WikiText-2 (valid/test), PTB (all splits) and every task, all tiny."""
    wiki = root / "wikitext-2-raw"
    wiki.mkdir(parents=True, exist_ok=True)
    for split in ("valid", "test"):
        (wiki / f"wiki.{split}.raw").write_text("".join(WIKI_LINES), encoding="utf-8")
    ptb = root / "ptb"
    ptb.mkdir(exist_ok=True)
    for split in ("train", "valid", "test"):
        (ptb / f"ptb.{split}.txt").write_text("".join(PTB_LINES), encoding="utf-8")
    for name in HF_ROWS:
        write_task(root, name)
    return root


def save_tiny_lm(path: Path, tokenizer_dir: Path, num_layers: int = 4, seed: int = 0) -> Path:
    """A tiny random llama with the embedded model's tokenizer (so it reads real text), saved to ``path``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny_models import tiny_config

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = tiny_config("llama", num_layers=num_layers)
    config.vocab_size = len(tok)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
