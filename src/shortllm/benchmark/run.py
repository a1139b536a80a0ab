"""The bench job: check everything, load every model, sweep, interleave the models run by run, summarise.

For each sweep point (batch size x prompt length x new tokens) the models run ``warmup`` times each and
then ``repeats`` times each, interleaved step by step with the order reversed every other step
(A B, B A, A B, ...; see :func:`interleaved_order`), so drift of the machine (thermal, other load) hits all
of them alike. Each row reports every figure as the median of the repeats with its min, max, relative
spread and every raw value; speedups over the first model are paired repeat by repeat and set beside the
ideal one from forward FLOPs per token; and each row carries a verdict (``trust``, see ``trust.py``) with
the machine's load, clock and temperature read before and after the point.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from shortllm.benchmark import machine
from shortllm.benchmark.request import BenchRequest, check_request, check_sweep_context, interleaved_order, labels_for
from shortllm.benchmark.result import BenchResult, ModelInfo, flops_shape, summarise
from shortllm.benchmark.trust import assess, machine_notes, summary
from shortllm.models.loading import check_settings, load_config, load_model, resolve_source

log = logging.getLogger(__name__)


def _environment(device: str) -> dict[str, Any]:
    import torch

    from shortllm.pruning.export import versions

    env = {
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else
        (platform.processor() or platform.machine()),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions(),
    }
    env["cpus_usable"] = machine.usable_cpus()
    env["load_average_start"] = machine.load_average()
    return env


def _model_info(label: str, loaded: Any) -> ModelInfo:
    from shortllm.models.arch import blocks_of
    from shortllm.models.params import count_params

    model = loaded.model
    size = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    return ModelInfo(label=label, spec=loaded.source.spec, fingerprint=loaded.fingerprint,
                     num_blocks=len(blocks_of(model).layers), params=count_params(model).total,
                     model_bytes=int(size), dtype=str(model.dtype).removeprefix("torch."),
                     shape=flops_shape(model))


def run_bench(req: BenchRequest, progress: Callable[[int, int, str], None] | None = None) -> BenchResult:
    """Run the sweep of ``req`` and (with ``req.out``) write bench.json, bench.png and shortllm.json.

    Args:
        req: the request.
        progress: called after every generate call with (runs done, runs in all, what ran).

    Raises:
        ShortLLMError: bad sizes, unknown device or model, a sweep beyond a model's context, an unusable
            ``--out`` -- all before any weights are loaded.
    """
    t0 = time.perf_counter()
    check_request(req)  # before torch is imported: a bad size is answered at once
    check_settings(req.settings)
    import torch

    from shortllm.benchmark.timing import (MemoryMeter, left_pad, special_ids, synthetic_prompts,
                                           timed_generate)
    from shortllm.pruning.export import check_output_dir, model_inputs

    labels = labels_for(req.models)
    for label, spec in zip(labels, req.models, strict=True):
        config = load_config(resolve_source(spec, req.settings.revision), req.settings.trust_remote_code)
        check_sweep_context(label, config, req.prompt_lens, req.new_tokens)
    if req.out is not None:
        check_output_dir(req.out, req.overwrite, [i for spec in req.models for i in model_inputs("model", spec)])
    if req.threads is not None:
        torch.set_num_threads(req.threads)

    loaded = [load_model(spec, req.settings) for spec in req.models]
    infos = [_model_info(label, lm) for label, lm in zip(labels, loaded, strict=True)]
    devices = [next(lm.model.parameters()).device for lm in loaded]
    run_device = str(devices[0])
    meter = MemoryMeter(run_device)
    environment = _environment(run_device)
    timings = {"load": time.perf_counter() - t0}

    t1 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    thresholds = req.thresholds()
    done, total = 0, req.total_runs()
    for point in req.points():
        batch, prompt_len, new_tokens = point
        where = f"batch {batch}, prompt {prompt_len}, {new_tokens} new"
        before = machine.sample(f"before {where}")
        inputs = []
        for lm, dev in zip(loaded, devices, strict=True):
            pad, eos, special = special_ids(lm.model, lm.tokenizer)
            vocab = lm.model.config.get_text_config().vocab_size
            ids, mask = left_pad(synthetic_prompts(vocab, batch, prompt_len, req.seed, special), pad)
            inputs.append((torch.tensor(ids, device=dev), torch.tensor(mask, device=dev), pad, eos))
        measured: list[list[Any]] = [[] for _ in loaded]
        for step, i in interleaved_order(len(loaded), req.warmup + req.repeats):  # A B, B A, A B, ...
            ids, mask, pad, eos = inputs[i]
            timing, _ = timed_generate(loaded[i].model, ids, mask, new_tokens, pad, eos, meter)
            if step >= req.warmup:
                measured[i].append(timing)
            done += 1
            phase = "warmup" if step < req.warmup else f"repeat {step - req.warmup + 1}"
            what = f"{where}: {infos[i].label} ({phase})"
            log.info("run %d/%d %s: %.2f s", done, total, what, timing.latency_s)
            if progress is not None:
                progress(done, total, what)
        after = machine.sample(f"after {where}")
        samples += [before, after]
        notes = machine_notes([before, after], environment.get("cpus_usable"), thresholds)
        for i, row in enumerate(summarise(infos, point, measured, meter.kind)):
            row["machine"] = {"before": before, "after": after}
            row["trust"] = assess(row["raw"], req.repeats, req.warmup, row["ideal_speedup"], i == 0, notes,
                                  thresholds)
            rows.append(row)
    timings["sweep"] = time.perf_counter() - t1
    environment["load_average_end"] = machine.load_average()
    trust = summary(rows, machine_notes(samples, environment.get("cpus_usable"), thresholds), req.repeats,
                    thresholds, threads=None if run_device.startswith("cuda") else environment["torch_threads"])

    settings = {"models": list(req.models), "batch_sizes": req.batch_sizes,
                "prompt_lens": req.prompt_lens, "new_tokens": req.new_tokens, "warmup": req.warmup,
                "repeats": req.repeats, "threads": req.threads, "seed": req.seed, "max_spread": req.max_spread,
                "prompts": "synthetic: seeded random token ids, special tokens excluded, left-padded",
                "generation": "greedy, min_new_tokens = max_new_tokens (EOS masked), KV cache on",
                **asdict(req.settings)}
    result = BenchResult(models=infos, rows=rows, environment=environment, settings=settings, trust=trust,
                         timings=timings)
    if req.out is not None:
        write_outputs(result, req)
    result.timings["total"] = time.perf_counter() - t0
    return result


def write_outputs(result: BenchResult, req: BenchRequest) -> None:
    """Write bench.json (every raw timing and the manifest), bench.png and shortllm.json atomically."""
    from shortllm.benchmark.plot import plot_bench
    from shortllm.pruning.export import atomic_dir, model_inputs, write_manifest

    assert req.out is not None
    result.out = str(req.out)
    with atomic_dir(req.out, req.overwrite, [i for spec in req.models for i in model_inputs("model", spec)]) as tmp:
        plot_bench(result.as_dict(), tmp / "bench.png")
        manifest = write_manifest(
            tmp, "bench", options=result.settings | {"command": req.command},
            source={"models": [{"spec": m.spec, "fingerprint": m.fingerprint} for m in result.models]},
            results={"results": result.rows, "trust": result.trust}, timings=result.timings,
        )
        payload = result.as_dict() | {"manifest": {k: v for k, v in manifest.items() if k != "results"}}
        (tmp / "bench.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
