"""The prune job: decide the blocks (explicit, or k by ratio/count ranked by a criterion or a saved score
run), then load, cut, save atomically and verify the reload."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import asdict
from typing import Any

from shortllm.errors import BlockSelectionError
from shortllm.formats import writes_gguf
from shortllm.models.checkpoint import parse_size
from shortllm.models.loading import (Loaded, check_settings, fingerprint, load_config, load_model,
                                     load_skeleton, resolve_source)
from shortllm.models.config_rewrite import original_indices, rewrite_config
from shortllm.models.params import count_params
from shortllm.models.surgery import drop_blocks
from shortllm.pruning.export import (atomic_dir, check_output_dir, model_card, prune_options, save_model,
                                     verify_reload, write_manifest)
from shortllm.pruning import out_of_core
from shortllm.pruning.pattern import PatternRule, check_pattern, moved_blocks, pattern_note, pattern_record, rules_for_hf
from shortllm.pruning.plan import Plan, plan_from_blocks
from shortllm.pruning.request import PruneRequest, PruneResult, prune_inputs
from shortllm.pruning.replace import check_options as check_replace_options
from shortllm.pruning.replacements import get_replacement
from shortllm.pruning.select import brief_report, check_mode, select_blocks
from shortllm.scoring.base import Progress
from shortllm.scoring.options import check_options
from shortllm.scoring.registry import get_criterion

log = logging.getLogger(__name__)


def prune(req: PruneRequest, progress: Progress = lambda d, t: None) -> PruneResult:
    """Run the prune job. ``dry_run`` computes the plan (scoring if needed) and writes nothing.

    Raises:
        ShortLLMError: for bad input (checked before slow work where possible) or a failed reload check.
    """
    if writes_gguf(req.out, req.out_format):  # GGUF in, GGUF out: quantized bytes copied, nothing dequantized but for scoring
        from shortllm.pruning.gguf import prune_gguf

        return prune_gguf(req, progress)
    t0 = time.perf_counter()
    check_mode(req)
    if req.blocks is None and req.scores_dir is None:
        check_options(req.scoring)  # the criterion and its values, as the CLI checks them before loading
    check_settings(req.settings)
    parse_size(req.max_shard_size)
    if req.replace is not None:
        method = get_replacement(req.replace)
        check_replace_options(req.replace_options)
        if req.scoring.protect_first is None and req.blocks is None and req.scores_dir is None:
            # a criterion must leave the blocks the method needs (linear: a kept block before every run)
            first = max(get_criterion(req.scoring.criterion).protect_first, method.protect_first)
            req = dataclasses.replace(req, scoring=dataclasses.replace(req.scoring, protect_first=first))
    if not req.dry_run:
        if req.out is None:
            raise BlockSelectionError("--out is required", "give an output directory, or --dry-run")
        check_output_dir(req.out, req.overwrite, prune_inputs(req))
    skeleton, source = load_skeleton(req.model, req.settings)
    counts = count_params(skeleton)
    n = len(counts.per_block)
    origin = original_indices(skeleton.config, n)
    rules = rules_for_hf(skeleton.config)  # what llama.cpp would derive from block indices after conversion
    removed, how, report, loaded = select_blocks(
        req, counts, rules, progress, lambda: fingerprint(source, load_config(source, req.settings.trust_remote_code)))
    cut = sorted(removed)  # what --replace replaces; a method's kept_back blocks (trained stand-ins) stay
    kept_back = get_replacement(req.replace).kept_back if req.replace else None
    if kept_back is not None:
        removed = [b for b in cut if b not in set(kept_back(cut))]
    plan = plan_from_blocks(counts, removed)
    guard_pattern(req, plan, rules, origin, n)
    # The config side of the cut, tried on a copy before any weights load: a position field the cut cannot
    # state (e.g. a period of MoE or no-RoPE blocks) is refused now, also on --dry-run.
    rewrite_config(copy.deepcopy(skeleton.config), plan.kept)
    if req.replace is not None:  # refused now (family, a run at block 0), also on --dry-run
        get_replacement(req.replace).check(skeleton.config, cut)
    result = PruneResult(
        model=source.spec, fingerprint=loaded.fingerprint if loaded else None, plan=plan,
        removed_original=[origin[i] for i in plan.removed], kept_original=[origin[i] for i in plan.kept],
        how=how, requested_ratio=req.ratio, scores=brief_report(report),
        params_outside_language_model=counts.outside_language_model or None,
        patterns=pattern_record(plan.removed, n, rules, guarded=req.keep_attention_pattern, output="hf")
        if rules else None,
    )
    result.timings["plan"] = time.perf_counter() - t0
    if req.dry_run:
        return result

    # Blocks known before loading: rewrite the files tensor by tensor, never instantiating the model.
    # (--replace changes kept weights, so it needs the model in memory.)
    files = (out_of_core.readable(source, skeleton, n, req.settings) if loaded is None and req.replace is None
             else None)
    result.surgery = "out-of-core" if files else "in-memory"
    config = load_config(source, req.settings.trust_remote_code) if files else None
    if files is None:
        if loaded is None:
            t1 = time.perf_counter()
            loaded = load_model(req.model, req.settings)
            result.timings["load"] = time.perf_counter() - t1
        if req.replace is not None:
            t1 = time.perf_counter()
            result.replacement = replace_run(req, loaded, cut, progress)
            result.timings["replace"] = time.perf_counter() - t1
            how += f"; {result.replacement['summary']}"
            result.how = how
        drop_blocks(loaded.model, plan.removed)
    result.fingerprint = fingerprint(source, config) if files else loaded.fingerprint
    t2 = time.perf_counter()
    with atomic_dir(req.out, req.overwrite, prune_inputs(req)) as tmp:
        log.info("Saving the pruned model to %s (%s surgery)", req.out, result.surgery, extra={"phase": True})
        if files:
            result.written, result.reload_max_diff = out_of_core.prune_files(
                files, config, plan.kept, plan.removed, tmp, req.max_shard_size, plan.params_after, req.model,
                req.settings)
            result.timings["save"] = time.perf_counter() - t2
        else:
            # a multimodal checkpoint's processor saves its tokenizer, image processor and chat template
            save_model(loaded.model, loaded.processor or loaded.tokenizer, tmp, req.max_shard_size)
            result.timings["save"] = time.perf_counter() - t2
            t3 = time.perf_counter()
            log.info("Reload check: loading the saved model with transformers and comparing logits",
                     extra={"phase": True})
            result.reload_max_diff = verify_reload(tmp, loaded.model)
            result.timings["verify"] = time.perf_counter() - t3
        result.out = str(req.out)
        (tmp / "README.md").write_text(model_card(
            name=req.out.name, source_spec=source.hub_id or source.ref, removed=result.removed_original,
            kept=result.kept_original, num_blocks=len(origin), params_before=plan.params_before,
            params_after=plan.params_after, how=how, command=req.command, base_model=source.hub_id,
        ) + pattern_note(result.patterns))
        result.timings["total"] = time.perf_counter() - t0
        write_manifest(
            tmp, "prune",
            options=prune_options(req, report, max_shard_size=req.max_shard_size, replace=req.replace,
                                  replace_options={**asdict(req.replace_options), "samples": samples_for(req)}
                                  if req.replace else None),
            source={**source.record(config if files else loaded.model.config), "fingerprint": result.fingerprint},
            results=result.as_dict(), timings=result.timings,
        )
    return result


def samples_for(req: PruneRequest) -> int:
    """The calibration windows ``--replace`` fits on: ``--replace-samples``, else the method's default."""
    return req.replace_options.samples or get_replacement(req.replace).default_samples


def replace_run(req: PruneRequest, loaded: Loaded, removed: list[int], progress: Progress) -> dict[str, Any]:
    """Fit and fold the ``--replace`` method for ``removed`` on calibration windows (``--replace-samples``
    windows of the scoring corpus, ``--seq-len``, ``--seed``). Returns the method's record plus a summary."""
    from dataclasses import replace as with_changes

    from shortllm.pruning.replace import ReplaceContext
    from shortllm.scoring.run import calibration_ids

    method = get_replacement(req.replace)
    ids = None
    if method.needs_data:
        cal = with_changes(req.scoring.calibration, samples=samples_for(req))
        log.info("Fitting the %s replacement on %d windows of %d tokens", method.name, cal.samples, cal.seq_len,
                 extra={"phase": True})
        if cal.data == "pydoc":  # measured: fitted on the built-in corpus, both methods made the cut worse
            log.warning("--replace %s is fitted on the built-in pydoc text (Python documentation); on SmolLM2-135M "
                        "that made WikiText-2 perplexity worse than the plain cut. Fit on general text: --data c4 "
                        "(or wikitext2) with --data-dir", method.name)
        ids, _ = calibration_ids(loaded, cal)
    record = method.run(ReplaceContext(loaded.model, ids, list(removed), req.replace_options,
                                       batch_size=req.scoring.batch_size or 8, progress=progress))
    runs = ", ".join(r["folded_into"] for r in record.get("runs", []))
    return {**record, "reference": method.reference,
            "summary": f"each removed run replaced by {method.summary} ({method.reference})"
                       + (f": {runs}" if runs else "")}


def guard_pattern(req: PruneRequest, plan: Plan, rules: list[PatternRule], origin: list[int], n: int) -> None:
    """HF outputs: with ``--keep-attention-pattern`` refuse a cut that moves llama.cpp's roles (e.g. --blocks);
    without it, warn (transformers reads ``layer_types``, but a llama.cpp conversion would not)."""
    if req.keep_attention_pattern:
        check_pattern(plan.removed, n, rules, origin, what="a GGUF converted from this checkpoint")
    elif moved_blocks(plan.removed, n, rules):
        log.warning("this cut keeps transformers' layer_types, but llama.cpp derives %s from block indices: a GGUF "
                    "converted from the output would move it (pass --keep-attention-pattern to avoid that)",
                    rules[0].describe())


__all__ = ["PruneRequest", "PruneResult", "prune", "resolve_source"]
