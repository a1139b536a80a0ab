"""What a bench run measured: the models (their size and :class:`~shortllm.benchmark.flops.FlopsShape`), the
result rows, and how the repeats of one sweep point become a row (medians, min, max, spread, raw values,
paired speedups beside the ideal one from FLOPs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from shortllm.benchmark.flops import FlopsShape, efficiency, flops_per_token, ideal_speedup, spread
from shortllm.benchmark.trust import SPEEDUP_OF, paired_ratios, relative_spread

METRICS = ("prefill_s", "decode_tokens_per_s", "latency_s", "throughput_tokens_per_s", "peak_memory_bytes")
# every figure of a result row: medians at the top level, with "min", "max", "spread" and "raw" beside them
FIGURES = METRICS + tuple(SPEEDUP_OF) + ("efficiency",)


def flops_shape(model: Any) -> FlopsShape:
    """Read a loaded (or meta) model's :class:`FlopsShape`: block and head parameters, attention width."""
    from shortllm.models.params import count_params

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
