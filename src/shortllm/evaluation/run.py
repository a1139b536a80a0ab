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
from shortllm.evaluation.perplexity import DEFAULT_SEQ_LEN, check_protocol, perplexity
from shortllm.evaluation.report import model_label, task_average
from shortllm.models.loading import LoadSettings, check_settings, load_config, load_model, resolve_source
from shortllm.pruning.export import atomic_dir, check_output_dir, data_inputs, model_inputs, write_manifest
from shortllm.wording import plural

log = logging.getLogger(__name__)

DEFAULT_PPL = ("wikitext2", "ptb")
# The reference code measures PTB on its validation split; other datasets use their own evaluation split.
EVAL_SPLITS = {"ptb": "validation", "ptb_text_only": "validation", "penn_treebank": "validation"}
RESULT_FILE = "eval.json"

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
    bos_every: bool = False
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


def load_corpus(spec: str, root: Path | None, text_field: str = "text") -> Corpus:
    """A perplexity corpus: the dataset's evaluation split (PTB: validation, as the reference code).

    Raises:
        DataError: unknown name, missing local file, no text.
    """
    name = spec.split(":", 1)[0].strip().lower()
    return load_documents(spec, split=EVAL_SPLITS.get(name), data_dir=root, text_field=text_field)



def _inputs(req: EvalRequest) -> list[tuple[str, Any]]:
    """What an eval reads: every model, perplexity files, the data directory and task definition folders."""
    found = [item for spec in req.models for item in model_inputs("model", spec)]
    for spec in req.ppl:
        found += data_inputs("perplexity data", spec)
    found += data_inputs("data", None, req.data_dir)
    return found + [("task definitions", path) for path in req.include_paths]

def _check_request(req: EvalRequest) -> tuple[list[Any], dict[str, Corpus], Any]:
    """All checks that need no weights; returns (sources, corpora, task plan)."""
    if req.limit is not None and req.limit < 1:
        raise DataError(f"--limit {req.limit} must be at least 1", "drop --limit to use everything")
    if req.batch_size is not None and req.batch_size < 1:
        raise DataError(f"--batch-size {req.batch_size} must be at least 1")
    if req.num_fewshot < 0:
        raise DataError(f"--num-fewshot {req.num_fewshot} must be 0 or more")
    check_task_names(req.tasks, data_dir(req.data_dir), req.include_paths)  # a typo fails in a second
    if not req.ppl and not req.tasks and req.generate is None:
        raise DataError("nothing to evaluate: --ppl and --tasks are both empty", "e.g. --ppl wikitext2")
    if req.ppl:
        check_protocol(req.protocol, req.window, req.stride, req.bos_every)
    check_settings(req.settings)
    if req.out is not None:
        check_output_dir(req.out, req.overwrite, _inputs(req))
    sources = []
    for spec in req.models:
        source = resolve_source(spec, req.settings.revision)
        config = load_config(source, req.settings.trust_remote_code)
        if req.ppl:  # every perplexity window is --seq-len tokens, a --bos-every BOS included
            what = f"--seq-len {req.window}" if req.seq_len else \
                f"--seq-len {req.window} (the default of --ppl-protocol {req.protocol})"
            check_context(config, req.window, what, "--seq-len", model=source.spec)
        sources.append(source)
    root = data_dir(req.data_dir)
    corpora = {spec: load_corpus(spec, root, req.text_field) for spec in req.ppl}
    return sources, corpora, plan_tasks(req.tasks, root, req.include_paths)


def _generate(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    import torch

    device = next(model.parameters()).device
    enc = tokenizer(prompt, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
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
    t1 = time.perf_counter()
    for name, corpus in corpora.items():
        with phase(f"{label}: perplexity on {name}") as tick:
            result = perplexity(loaded.model, loaded.tokenizer, corpus, req.protocol, req.window, req.stride,
                                req.bos_every, req.limit, req.batch_size, tick)
        entry["ppl"][name] = result.ppl
        entry["ppl_details"][name] = result.as_dict()
        log.info("%s: %s perplexity %.3f over %s", label, name, result.ppl,
                 plural(result.tokens_scored, "token", thousands=True))
    timings["ppl"] = time.perf_counter() - t1
    if plan.names:
        t2 = time.perf_counter()
        with phase(f"{label}: lm-eval tasks {', '.join(plan.names)}"):
            entry["tasks"] = run_tasks(loaded.model, loaded.tokenizer, plan, req.limit, req.batch_size or 8,
                                       req.num_fewshot, req.seed)
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


__all__ = ["EvalRequest", "load_corpus", "parse_ppl", "run_eval"]
