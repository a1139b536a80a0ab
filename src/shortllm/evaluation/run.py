"""The eval job: check everything, then per model load -> perplexities -> lm-eval tasks -> samples -> free.

Every input (models, data, task files, sizes, --out) is checked before the first model is loaded, so bad input
fails in seconds and nothing is written. Models are evaluated one at a time and freed in between.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shortllm.data import Corpus, data_dir, load_documents
from shortllm.data.context import check_context
from shortllm.errors import DataError
from shortllm.evaluation.lmeval import check_task_names, plan_tasks, run_tasks
from shortllm.evaluation.tasks import OFFLINE_TASKS
from shortllm.evaluation.perplexity import DEFAULT_SEQ_LEN, check_protocol, perplexity
from shortllm.models.arch import needs_bos
from shortllm.evaluation.report import model_label, task_average
from shortllm.models.loading import LoadSettings, check_settings, load_config, load_model, resolve_source
from shortllm.pruning.export import atomic_dir, check_output_dir, data_inputs, model_inputs, write_manifest
from shortllm.wording import plural

log = logging.getLogger(__name__)

DEFAULT_PPL = ("wikitext2", "ptb")
# The reference code measures PTB on its validation split; other datasets use their own evaluation split.
EVAL_SPLITS = {"ptb": "validation", "ptb_text_only": "validation", "penn_treebank": "validation"}
RESULT_FILE = "eval.json"


@dataclass(frozen=True)
class PplRecipe:
    """A perplexity measurement that fixes its own text and windows: a reference's evaluation, asked for by name.

    Attributes:
        dataset, split: the named dataset read (``fallback_split`` when a data directory lacks ``split``).
        documents: keep the first N documents.
        joiner: what goes between them before tokenizing (with the tokenizer's own special tokens).
        seq_len, windows: non-overlapping windows of ``seq_len`` tokens, the first ``windows`` of them
            (``--seq-len`` and ``--limit`` still override).
    """

    dataset: str
    split: str
    documents: int
    joiner: str
    seq_len: int
    windows: int
    fallback_split: str | None
    reference: str


# GPTQ/SparseGPT/SLEB datautils get_c4 (the "c4-new" rule): tokenizer(" ".join(valdata[:1100]["text"])), truncated
# to 256 * seqlen tokens, cut into 2048-token windows. valdata = allenai/c4 en/c4-validation.00000-of-00008.json.gz.
PPL_RECIPES = {
    "c4-gptq": PplRecipe("c4", "validation", 1100, " ", 2048, 256, "train",
                         "GPTQ/SparseGPT/SLEB datautils get_c4: first 1100 C4 validation documents joined with a "
                         "space, 256 windows of 2048 tokens"),
}

Phase = Callable[[str], contextlib.AbstractContextManager]  # description -> context yielding tick(done, total)


def _no_phase(description: str):
    return contextlib.nullcontext(lambda done, total: None)


@dataclass
class EvalRequest:
    """Everything the eval job needs; built by ``cli/eval.py`` (or a script)."""

    models: list[str | None] = field(default_factory=lambda: [None])  # None = the embedded default
    ppl: list[str] = field(default_factory=lambda: list(DEFAULT_PPL))
    tasks: list[str] = field(default_factory=list)
    protocol: str = "paper"
    seq_len: int | None = None  # None: 128 (paper) or 2048 (sliding)
    stride: int = 512
    bos_every: bool | None = None  # None: on for the Gemma family (paper protocol), off otherwise
    ppl_bos: str = "tokenizer"  # tokenizer | always | never (evaluation/perplexity.py)
    add_bos: bool | None = None  # lm-eval HFLM add_bos_token; None: the tokenizer's default (Gemma: True)
    limit: int | None = None
    batch_size: int | None = None  # None: 8 for tasks, a 2048-token budget for perplexity
    num_fewshot: int = 0
    seed: int = 1234
    data_dir: str | None = None
    text_field: str = "text"
    include_paths: list[Path] = field(default_factory=list)
    generate: str | None = None
    max_new_tokens: int = 32
    settings: LoadSettings = field(default_factory=LoadSettings)
    out: Path | None = None
    overwrite: bool = False
    command: str = "shortllm eval"

    @property
    def window(self) -> int:
        return self.seq_len or DEFAULT_SEQ_LEN.get(self.protocol, 128)


def parse_ppl(spec: str | None) -> list[str]:
    """``"wikitext2,ptb"`` -> specs; None -> wikitext2 and ptb; ``""``/``none`` -> no perplexity."""
    if spec is None:
        return list(DEFAULT_PPL)
    if spec.strip().lower() in ("", "none"):
        return []
    return list(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))


def recipe_of(spec: str) -> PplRecipe | None:
    """The :data:`PPL_RECIPES` entry a ``--ppl`` spec names (``c4-gptq``, ``c4-gptq:train``), or None."""
    return PPL_RECIPES.get(spec.split(":", 1)[0].strip().lower())


def load_recipe_corpus(spec: str, recipe: PplRecipe, root: Path | None, text_field: str = "text") -> Corpus:
    """The documents of a recipe: its dataset's split (or the one the spec names), first ``documents`` of them.

    A data directory without the recipe's split but with ``fallback_split`` (the shared folder holds the first
    1000 C4 *train* documents, no validation file) reads that split with a warning; the report names the split.

    Raises:
        DataError: the data cannot be read.
    """
    _, _, asked = spec.partition(":")
    split = asked.strip() or recipe.split
    try:
        corpus = load_documents(recipe.dataset, split=split, data_dir=root, text_field=text_field)
    except DataError:
        if asked.strip() or root is None or recipe.fallback_split is None:
            raise
        corpus = load_documents(recipe.dataset, split=recipe.fallback_split, data_dir=root, text_field=text_field)
        log.warning("%s: the data directory has no %s %s split; using its %s split instead (the number is not the "
                    "reference's)", spec, recipe.dataset, recipe.split, recipe.fallback_split)
    return Corpus(corpus.documents[:recipe.documents], spec.split(":", 1)[0].strip().lower(), corpus.split,
                  corpus.source, separator=recipe.joiner)


def load_corpus(spec: str, root: Path | None, text_field: str = "text") -> Corpus:
    """A perplexity corpus: the dataset's evaluation split (PTB: validation, as the reference code), or a recipe's.

    Raises:
        DataError: unknown name, missing local file, no text.
    """
    recipe = recipe_of(spec)
    if recipe is not None:
        return load_recipe_corpus(spec, recipe, root, text_field)
    name = spec.split(":", 1)[0].strip().lower()
    return load_documents(spec, split=EVAL_SPLITS.get(name), data_dir=root, text_field=text_field)


def ppl_plan(req: EvalRequest, spec: str, config: Any = None) -> dict[str, Any]:
    """How one ``--ppl`` spec is measured for one model: protocol, window, limit, joiner and BOS placement.

    A recipe (``c4-gptq``) fixes its protocol, joiner and window count; ``--seq-len``/``--limit`` still narrow it.
    The Gemma family (:func:`shortllm.models.arch.needs_bos`) gets BOS before every paper window unless
    ``--no-bos-every`` was given (Shortened LLaMA's setting for Gemma).
    """
    recipe = recipe_of(spec)
    protocol = "paper" if recipe else req.protocol
    seq_len = req.seq_len or (recipe.seq_len if recipe else req.window)
    limit = recipe.windows if recipe else req.limit
    if recipe and req.limit is not None:
        limit = min(limit, req.limit)
    bos_every = req.bos_every
    if bos_every is None:
        bos_every = protocol == "paper" and config is not None and needs_bos(config)
    return {"protocol": protocol, "seq_len": seq_len, "limit": limit, "bos_every": bool(bos_every),
            "joiner": recipe.joiner if recipe else None, "recipe": recipe.reference if recipe else None}



def _inputs(req: EvalRequest) -> list[tuple[str, Any]]:
    """What an eval reads: every model, perplexity files, the data directory and task definition folders."""
    found = [item for spec in req.models for item in model_inputs("model", spec)]
    for spec in req.ppl:
        found += data_inputs("perplexity data", spec)
    found += data_inputs("data", None, req.data_dir)
    return found + [("task definitions", path) for path in req.include_paths]

def check_fewshot(num_fewshot: int, tasks: list[str], root: Path | None) -> None:
    """Refuse few-shot prompts on shortllm's offline tasks: their files hold only the evaluated split.

    lm-eval draws few-shot examples from a task's training split, else from the split it evaluates; the offline
    definitions (``--data-dir``) read one split only, so the examples would be items being scored.

    Raises:
        DataError: ``num_fewshot > 0`` with an offline task.
    """
    offline = [n for n in tasks if root is not None and n in OFFLINE_TASKS]
    if num_fewshot > 0 and offline:
        raise DataError(f"--num-fewshot {num_fewshot}: the offline task files of --data-dir ({', '.join(offline)}) "
                        "hold only the evaluated split, so the examples would be items being scored",
                        "use --num-fewshot 0 (the paper's zero-shot setting), or run without --data-dir so that "
                        "lm-eval reads the tasks' training splits")


def _check_request(req: EvalRequest) -> tuple[list[Any], dict[str, Corpus], Any]:
    """All checks that need no weights; returns (sources, corpora, task plan)."""
    if req.limit is not None and req.limit < 1:
        raise DataError(f"--limit {req.limit} must be at least 1", "drop --limit to use everything")
    if req.batch_size is not None and req.batch_size < 1:
        raise DataError(f"--batch-size {req.batch_size} must be at least 1")
    if req.num_fewshot < 0:
        raise DataError(f"--num-fewshot {req.num_fewshot} must be 0 or more")
    if req.generate is not None and not req.generate.strip():
        raise DataError("--generate is empty: give the prompt to continue", "e.g. --generate 'The capital of'")
    if req.generate is not None and req.max_new_tokens < 1:
        raise DataError(f"--max-new-tokens {req.max_new_tokens} must be at least 1")
    check_fewshot(req.num_fewshot, req.tasks, data_dir(req.data_dir))
    check_task_names(req.tasks, data_dir(req.data_dir), req.include_paths)  # a typo fails in a second
    if not req.ppl and not req.tasks and req.generate is None:
        raise DataError("nothing to evaluate: --ppl and --tasks are both empty", "e.g. --ppl wikitext2")
    if req.ppl:
        for spec in req.ppl:
            how = ppl_plan(req, spec)
            check_protocol(how["protocol"], how["seq_len"], req.stride, bool(req.bos_every), req.ppl_bos)
    check_settings(req.settings)
    if req.out is not None:
        check_output_dir(req.out, req.overwrite, _inputs(req))
    sources = []
    for spec in req.models:
        source = resolve_source(spec, req.settings.revision)
        config = load_config(source, req.settings.trust_remote_code)
        for spec in req.ppl:  # a window is --seq-len tokens, plus a BOS with --bos-every
            how = ppl_plan(req, spec, config)
            origin = f"the default of {spec}" if recipe_of(spec) else f"the default of --ppl-protocol {req.protocol}"
            what = f"--seq-len {how['seq_len']}" + ("" if req.seq_len else f" ({origin})") + \
                (" + the BOS of --bos-every" if how["bos_every"] else "")
            check_context(config, how["seq_len"] + how["bos_every"], what, "--seq-len", model=source.spec,
                          extra=int(how["bos_every"]))
        sources.append(source)
    root = data_dir(req.data_dir)
    corpora = {spec: load_corpus(spec, root, req.text_field) for spec in req.ppl}
    return sources, corpora, plan_tasks(req.tasks, root, req.include_paths)


def _generate(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    import torch

    from shortllm.models.generation import plain_generation

    device = next(model.parameters()).device
    enc = tokenizer(prompt, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad(), plain_generation(model):
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def _free(loaded: Any) -> None:
    import torch

    del loaded
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_model(spec: str | None, source: Any, req: EvalRequest, corpora: dict[str, Corpus], plan: Any,
                   phase: Phase = _no_phase) -> dict[str, Any]:
    """Load one model, measure everything asked, free it; returns its entry of the report."""
    t0 = time.perf_counter()
    loaded = load_model(spec, req.settings)
    timings = {"load": time.perf_counter() - t0}
    label = model_label(spec, source.kind, source.path)
    if req.generate is not None:  # before the slow work: the prompt and its new tokens must fit the context
        if loaded.tokenizer is None:
            raise DataError(f"{source.spec} has no tokenizer, so it cannot generate", "drop --generate")
        prompt = len(loaded.tokenizer(req.generate)["input_ids"])
        check_context(loaded.model.config, prompt + req.max_new_tokens,
                      f"--generate ({plural(prompt, 'token')}) + --max-new-tokens {req.max_new_tokens}",
                      "--max-new-tokens",
                      model=source.spec, extra=prompt)
    entry: dict[str, Any] = {"model": source.spec, "label": label, "fingerprint": loaded.fingerprint,
                             "ppl": {}, "ppl_details": {}, "tasks": {}, "average": None}
    gemma = needs_bos(loaded.model.config)
    if gemma and corpora and req.bos_every is None and req.protocol == "paper":
        log.info("%s: the Gemma family needs BOS at the start of every window: perplexity puts one before each "
                 "window (--bos-every; --no-bos-every to turn it off)", label)
    if gemma and corpora and (req.bos_every is False or req.protocol == "sliding"):
        log.warning("%s: the Gemma family needs BOS at the start of every window, and these windows (but the first) "
                    "have none: the perplexity is not comparable (use --ppl-protocol paper --bos-every)", label)
    t1 = time.perf_counter()
    for name, corpus in corpora.items():
        how = ppl_plan(req, name, loaded.model.config)
        with phase(f"{label}: perplexity on {name}") as tick:
            result = perplexity(loaded.model, loaded.tokenizer, corpus, how["protocol"], how["seq_len"],
                                req.stride, how["bos_every"], how["limit"], req.batch_size, tick,
                                ppl_bos=req.ppl_bos, joiner=how["joiner"])
        entry["ppl"][name] = result.ppl
        entry["ppl_details"][name] = {**result.as_dict(), "recipe": how["recipe"]}
        log.info("%s: %s perplexity %.3f over %s", label, name, result.ppl,
                 plural(result.tokens_scored, "token", thousands=True))
    timings["ppl"] = time.perf_counter() - t1
    if plan.names:
        add_bos = req.add_bos
        if add_bos is None and gemma:
            add_bos = True
            log.info("%s: the Gemma family needs BOS: lm-eval task inputs start with it (--add-bos)", label)
        elif add_bos is False and gemma:
            log.warning("%s: --no-add-bos on the Gemma family, which needs BOS: task scores will suffer", label)
        entry["lm_eval_add_bos"] = add_bos
        t2 = time.perf_counter()
        with phase(f"{label}: lm-eval tasks {', '.join(plan.names)}"):
            entry["tasks"] = run_tasks(loaded.model, loaded.tokenizer, plan, req.limit, req.batch_size or 8,
                                       req.num_fewshot, req.seed, add_bos=add_bos)
        entry["average"] = task_average(entry["tasks"])
        timings["tasks"] = time.perf_counter() - t2
    if req.generate is not None:
        t3 = time.perf_counter()
        entry["generation"] = {"prompt": req.generate, "max_new_tokens": req.max_new_tokens,
                               "text": _generate(loaded.model, loaded.tokenizer, req.generate, req.max_new_tokens)}
        timings["generate"] = time.perf_counter() - t3
    entry["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    _free(loaded)
    return entry


def run_eval(req: EvalRequest, phase: Phase = _no_phase) -> dict[str, Any]:
    """Run the eval job; with ``req.out`` write ``eval.json`` and ``shortllm.json`` atomically.

    Returns:
        ``{"models": [entry, ...], "settings": {...}, "data": {...}, "out": ...}``; every entry has
        ``model``, ``label``, ``ppl`` ({dataset: value}), ``ppl_details``, ``tasks`` ({task: {metric, value,
        stderr, metrics, stderrs, samples, source}}), ``average``, and ``generation`` with ``--generate``.

    Raises:
        ShortLLMError: bad input, checked before any model is loaded.
    """
    t0 = time.perf_counter()
    sources, corpora, plan = _check_request(req)
    models = [evaluate_model(spec, source, req, corpora, plan, phase) for spec, source in zip(req.models, sources)]
    settings = {k: v for k, v in asdict(req).items() if k not in ("models", "settings", "out", "overwrite",
                                                                  "command", "include_paths")}
    settings.update(seq_len=req.window, include_paths=[str(p) for p in req.include_paths],
                    task_sources={n: plan.source(n) for n in plan.names}, load=asdict(req.settings))
    report = {
        "models": models,
        "settings": settings,
        "data": {spec: {"name": c.name, "split": c.split, "source": c.source, "documents": len(c),
                        "fingerprint": c.fingerprint()} for spec, c in corpora.items()},
        "out": str(req.out) if req.out is not None else None,
    }
    if req.out is not None:
        with atomic_dir(req.out, req.overwrite, _inputs(req)) as tmp:
            (tmp / RESULT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")
            write_manifest(tmp, "eval", options={**settings, "models": req.models, "command": req.command},
                           source={"models": [{**s.record(), "fingerprint": m["fingerprint"]}
                                              for s, m in zip(sources, models)]},
                           results=report, timings={"total": time.perf_counter() - t0})
    return report


__all__ = ["EvalRequest", "PPL_RECIPES", "PplRecipe", "load_corpus", "parse_ppl", "ppl_plan", "run_eval"]
