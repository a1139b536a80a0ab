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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shortllm.benchmark import machine
from shortllm.benchmark.flops import FlopsShape, efficiency, flops_per_token, ideal_speedup, spread
from shortllm.benchmark.trust import SPEEDUP_OF, Thresholds, assess, machine_notes, paired_ratios, \
    relative_spread, summary
from shortllm.data.context import check_context, context_limit
from shortllm.errors import BenchSettingsError
from shortllm.models.loading import LoadSettings, check_settings, load_config, load_model, resolve_source

log = logging.getLogger(__name__)

METRICS = ("prefill_s", "decode_tokens_per_s", "latency_s", "throughput_tokens_per_s", "peak_memory_bytes")
# every figure of a result row: medians at the top level, with "min", "max", "spread" and "raw" beside them
FIGURES = METRICS + tuple(SPEEDUP_OF) + ("efficiency",)


@dataclass
class BenchRequest:
    """Everything the bench job needs; built by ``cli/bench.py`` (or a script)."""

    models: list[str | None]  # None = the embedded default
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    prompt_lens: list[int] = field(default_factory=lambda: [64])
    new_tokens: list[int] = field(default_factory=lambda: [128])
    warmup: int = 2
    repeats: int = 5
    threads: int | None = None  # torch CPU threads; None = torch's own choice
    seed: int = 1234
    max_spread: float = Thresholds.max_spread  # flag a figure whose (max - min) / median is above this
    settings: LoadSettings = field(default_factory=LoadSettings)
    out: Path | None = None
    overwrite: bool = False
    command: str = "shortllm bench"

    def points(self) -> list[tuple[int, int, int]]:
        """The sweep, as (batch size, prompt length, new tokens), batch size varying fastest."""
        return [(b, p, n) for p in self.prompt_lens for n in self.new_tokens for b in self.batch_sizes]

    def total_runs(self) -> int:
        """Generate calls in the whole sweep, warm-up included."""
        return len(self.points()) * (self.warmup + self.repeats) * len(self.models)

    def thresholds(self) -> Thresholds:
        """When a result is flagged unreliable."""
        return Thresholds(max_spread=self.max_spread)


def interleaved_order(n_models: int, steps: int) -> list[tuple[int, int]]:
    """The order of one sweep point's runs, as (step, model index): every model once per step, the order
    reversed every other step (A B, B A, A B, ... for two models).

    Repeat k of every model runs back to back with repeat k of the others, so a load change between steps
    scales them all and cancels in the paired speedups; reversing the order every other step means no model
    always runs first (or always right after the same one), so a drift within a step favours none.
    """
    order = []
    for step in range(steps):
        models = range(n_models) if step % 2 == 0 else reversed(range(n_models))
        order.extend((step, i) for i in models)
    return order


def parse_sizes(text: str, option: str) -> list[int]:
    """Parse ``"1,8"`` into ``[1, 8]`` (each entry a positive integer).

    Raises:
        BenchSettingsError: naming the option, for anything else.
    """
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise BenchSettingsError(f"{option} {text!r}: {part!r} is not an integer",
                                     f"write e.g. {option} 1,8") from None
        if value <= 0:
            raise BenchSettingsError(f"{option} must be positive, got {value}", f"write e.g. {option} 1,8")
        out.append(value)
    return out


def check_request(req: BenchRequest) -> None:
    """Check the sweep's numbers before anything is loaded.

    Raises:
        BenchSettingsError: empty or non-positive sizes, negative warmup, fewer than one repeat or thread.
    """
    for option, values in (("--batch-sizes", req.batch_sizes), ("--prompt-len", req.prompt_lens),
                           ("--new-tokens", req.new_tokens)):
        if not values:
            raise BenchSettingsError(f"{option} is empty", f"give at least one value, e.g. {option} 8")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise BenchSettingsError(f"{option} must be positive, got {v}", f"write e.g. {option} 8")
    if req.warmup < 0:
        raise BenchSettingsError(f"--warmup must be 0 or more, got {req.warmup}", "write e.g. --warmup 2")
    if req.repeats < 1:
        raise BenchSettingsError(f"--repeats must be at least 1, got {req.repeats}", "write e.g. --repeats 5")
    if req.threads is not None and req.threads < 1:
        raise BenchSettingsError(f"--threads must be at least 1, got {req.threads}", "write e.g. --threads 4")
    if not req.max_spread > 0:
        raise BenchSettingsError(f"--max-spread must be above 0, got {req.max_spread}",
                                 "write e.g. --max-spread 0.2 (20% of the median)")
    if not req.models:
        raise BenchSettingsError("no model to benchmark", "give --model/-m once per model")


def check_sweep_context(label: str, config: Any, prompt_lens: Sequence[int], new_tokens: Sequence[int]) -> None:
    """Refuse a sweep whose longest prompt + generation does not fit the model's context.

    The hint names the option to lower: ``--new-tokens`` when the longest prompt alone fits, else ``--prompt-len``.

    Raises:
        BenchSettingsError: naming the model, the length asked, the limit and a value that fits.
    """
    prompt, new = max(prompt_lens), max(new_tokens)
    limit = context_limit(config)
    option, extra = ("--new-tokens", prompt) if limit is None or prompt < limit else ("--prompt-len", new)
    check_context(config, prompt + new, f"--prompt-len {prompt} + --new-tokens {new} = {prompt + new} tokens",
                  option, model=label, extra=extra, error=BenchSettingsError)


def labels_for(specs: Sequence[str | None]) -> list[str]:
    """Display names of the models: the spec as given (default: the alias), made unique with #2, #3..."""
    from shortllm.models.demo import DEMO_ALIAS

    out: list[str] = []
    for spec in specs:
        base = spec or DEMO_ALIAS
        name, n = base, 1
        while name in out:
            n += 1
            name = f"{base} #{n}"
        out.append(name)
    return out


def flops_shape(model: Any) -> FlopsShape:
    """Read a loaded (or meta) model's :class:`FlopsShape`: block and head parameters, attention width."""
    from shortllm.models.surgery import count_params

    config = model.config.get_text_config()
    counts = count_params(model)
    head = model.get_output_embeddings()
    head_params = head.weight.numel() if head is not None else config.vocab_size * config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layer_types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    windows: tuple[int | None, ...] = ()
    if isinstance(layer_types, (list, tuple)) and len(layer_types) == len(counts.per_block) and window:
        windows = tuple(int(window) if "sliding" in str(t) else None for t in layer_types)
    return FlopsShape(block_params=counts.blocks, head_params=int(head_params),
                      num_blocks=len(counts.per_block), attn_dim=int(heads * head_dim), windows=windows)


# ----------------------------------------------------------------------------------------------- result

@dataclass
class ModelInfo:
    """One benchmarked model."""

    label: str
    spec: str
    fingerprint: str
    num_blocks: int
    params: int
    model_bytes: int  # parameters and buffers as loaded
    dtype: str
    shape: FlopsShape

    def as_dict(self) -> dict[str, Any]:
        info = asdict(self)
        info["shape"] = asdict(self.shape)
        return info


@dataclass
class BenchResult:
    """Everything measured; ``as_dict`` is the JSON of ``--json`` and ``bench.json``."""

    models: list[ModelInfo]
    rows: list[dict[str, Any]]
    environment: dict[str, Any]
    settings: dict[str, Any]
    trust: dict[str, Any] = field(default_factory=dict)  # trust.summary(): the verdict and flag lines
    out: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "results": self.rows,
            "trust": self.trust,
            "models": [m.as_dict() for m in self.models],
            "environment": self.environment,
            "settings": self.settings,
            "out": self.out,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def summarise(models: Sequence[ModelInfo], point: tuple[int, int, int], runs: Sequence[Sequence[Any]],
              memory_kind: str) -> list[dict[str, Any]]:
    """One result row per model for one sweep point: every figure's median, min, max, spread and raw repeats.

    ``runs[i]`` holds model i's measured :class:`~shortllm.benchmark.timing.RunTiming` repeats, in step order.
    Speedups over the first model are paired: repeat k of model i against repeat k of the first model (run
    back to back), then the median and min..max of those ratios. "speedup" is the decode throughput ratio
    (the part depth pruning speeds up); "latency_speedup" and "prefill_speedup" are given beside it, and
    "efficiency" is speedup / ideal. "spread" is (max - min) / median of each figure.
    """
    batch, prompt_len, new_tokens = point
    rows = []
    base_flops = flops_per_token(models[0].shape, prompt_len)
    base = {m: [getattr(t, m) for t in runs[0]] for m in METRICS}
    for info, timings in zip(models, runs, strict=True):
        raw: dict[str, list] = {m: [getattr(t, m) for t in timings] for m in METRICS}
        flops = flops_per_token(info.shape, prompt_len)
        ideal = ideal_speedup(base_flops, flops)
        for name, (metric, higher_is_better) in SPEEDUP_OF.items():
            raw[name] = paired_ratios(raw[metric], base[metric], higher_is_better)
        raw["efficiency"] = [efficiency(v, ideal) for v in raw["speedup"]]
        stats = {f: spread(raw[f]) for f in FIGURES}
        rows.append({
            "model": info.label, "batch_size": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
            **{f: stats[f]["median"] for f in METRICS},
            "memory_kind": memory_kind,
            "flops_per_token": flops,
            "ideal_speedup": ideal,
            **{f: stats[f]["median"] for f in FIGURES[len(METRICS):]},
            "min": {f: stats[f]["min"] for f in FIGURES},
            "max": {f: stats[f]["max"] for f in FIGURES},
            "spread": {f: relative_spread(raw[f]) for f in FIGURES},
            "raw": raw | {"decode_s": [t.decode_s for t in timings]},
            "generated_tokens": [t.new_tokens for t in timings],
        })
    return rows


# ----------------------------------------------------------------------------------------------- the job

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
    from shortllm.models.surgery import count_params

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
