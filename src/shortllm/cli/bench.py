"""``shortllm bench``: generation latency, throughput and memory of several models side by side."""

from __future__ import annotations

import contextlib
import shlex
import sys
from typing import Annotated, Optional

import typer

from shortllm.cli import applies
from shortllm.cli.options import (DeviceMapOpt, DeviceOpt, DtypeOpt, JsonOpt, ModelsOpt, OutOpt, OverwriteOpt,
                                  KernelsOpt, RevisionOpt, SeedOpt, TrustRemoteCodeOpt, early_checks,
                                  load_settings)
from shortllm.cli.help import in_group
from shortllm.cli.output import activity, console, err_console, print_json, print_path, state

BatchSizesOpt = Annotated[str, typer.Option("--batch-sizes", help="Batch sizes to sweep, e.g. 1,8.", rich_help_panel='Sweep')]
PromptLenOpt = Annotated[str, typer.Option("--prompt-len", help="Prompt length(s) in tokens, e.g. 64,512.", rich_help_panel='Sweep')]
NewTokensOpt = Annotated[str, typer.Option("--new-tokens", help="New tokens per row (forced), e.g. 128.", rich_help_panel='Sweep')]
WarmupOpt = Annotated[int, typer.Option("--warmup", help="Untimed runs per model and sweep point.", rich_help_panel='Sweep')]
RepeatsOpt = Annotated[int, typer.Option("--repeats", help="Timed runs per model and sweep point (median).", rich_help_panel='Sweep')]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option("--threads", help="torch CPU threads (default: torch's own).", show_default=False, rich_help_panel='Sweep'),
]
MaxSpreadOpt = Annotated[float, typer.Option(
    "--max-spread", help="Flag a result unreliable when a figure's (max - min) / median over the repeats "
                         "is above this (0.2 = 20%).", rich_help_panel='Sweep')]


def bench(
    ctx: typer.Context,
    model: ModelsOpt = None,
    batch_sizes: BatchSizesOpt = "1,8",
    prompt_len: PromptLenOpt = "64",
    new_tokens: NewTokensOpt = "128",
    warmup: WarmupOpt = 2,
    repeats: RepeatsOpt = 5,
    threads: ThreadsOpt = None,
    max_spread: MaxSpreadOpt = 0.2,
    out: OutOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    kernels: KernelsOpt = False,
    revision: RevisionOpt = None,
    seed: in_group(SeedOpt, "Sweep") = 1234,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure generation speed and memory of one or more models side by side, against the ideal speedup.

    Examples:

    \b
      shortllm bench -m smollm2-135m -m pruned/ --batch-sizes 1,4 --new-tokens 32
      shortllm bench -m pruned/ --out bench/ --json
      shortllm bench -m Qwen/Qwen2.5-0.5B -m qwen-short/ --device cuda --dtype bfloat16 --batch-sizes 1,8,32

    Per model and sweep point: time to first token, decode tokens/s, latency, total tokens/s, peak memory.

    Generation is greedy and forced to exactly --new-tokens tokens; models alternate run by run (A B, B A, ...).

    Every figure is the median [min..max] of the repeats; speedups are paired repeat by repeat. A result whose
    repeats spread too wide (--max-spread), with too few repeats, or whose speedup range cannot tell x1 from the
    ideal is flagged UNRELIABLE with its reasons and the machine's load, clock and temperature.

    Ideal speedup over the first model = ratio of forward FLOPs per token; efficiency = measured / ideal.

    With --out: bench.json (every raw timing and the manifest), bench.png, shortllm.json.
    """
    applies.check_given(ctx, applies.BENCH)
    settings = load_settings(dtype, device, device_map, trust_remote_code, revision, kernels)
    early_checks(settings, models=list(model or [None]))
    from shortllm.benchmark.request import BenchRequest, parse_sizes
    from shortllm.benchmark.run import run_bench

    request = BenchRequest(
        models=list(model) if model else [None],
        batch_sizes=parse_sizes(batch_sizes, "--batch-sizes"),
        prompt_lens=parse_sizes(prompt_len, "--prompt-len"),
        new_tokens=parse_sizes(new_tokens, "--new-tokens"),
        warmup=warmup, repeats=repeats, threads=threads, seed=seed, max_spread=max_spread,
        settings=settings, out=out, overwrite=overwrite, command=shlex.join(["shortllm", *sys.argv[1:]]),
    )
    with _progress() as advance:
        result = run_bench(request, progress=advance)
    if json_out:
        print_json(result.as_dict())
        if not state["quiet"]:  # the flags go to stderr, so a script reading stdout still sees them in a log
            _print_trust(result.trust, err_console)
        return
    _render(result.as_dict())


@contextlib.contextmanager
def _progress():
    """The sweep's progress on stderr (cli/output.py); yields ``advance(done, total, what)`` for the core."""
    with activity("Starting shortllm bench") as act:  # the core names the loading phases
        yield lambda done, total, what: act.update(done, total, name="Timing generation", unit="run", info=what)


def _mb(n: int | None) -> str:
    return "unknown" if n is None else f"+{n / 2**20:.1f} MiB"


def _range(r: dict, key: str, fmt) -> str:
    """``[min..max]`` of one figure, each formatted with ``fmt``; empty when the repeats are unknown."""
    lo, hi = r["min"].get(key), r["max"].get(key)
    return "" if lo is None or hi is None else f" [{fmt(lo)}..{fmt(hi)}]"


def _print_trust(trust: dict, target) -> None:
    """The flag lines of unreliable results, the machine's notes and the one-line verdict."""
    from rich.text import Text

    for line in trust.get("flags", []):
        target.print(Text(line, "bold red"), soft_wrap=True)
    for note in trust.get("machine", []):
        target.print(Text(f"machine: {note}"), soft_wrap=True)
    if trust.get("verdict"):
        target.print(Text(trust["verdict"], "bold" if trust.get("trusted") else "bold red"), soft_wrap=True)


def _render(report: dict) -> None:
    from rich.table import Table

    from shortllm.wording import plural

    models = [m["label"] for m in report["models"]]
    env = report["environment"]
    table = Table(title=f"Generation on {env['device']} ({plural(env['torch_threads'], 'thread')}): median "
                        f"[min..max] of {plural(report['settings']['repeats'], 'repeat')}; speedups vs {models[0]}, "
                        "paired repeat by repeat", show_lines=True)
    for col in ("batch", "prompt", "new"):
        table.add_column(col, justify="right")
    for m in models:
        table.add_column(m, justify="left")
    by_point: dict[tuple, dict[str, dict]] = {}
    for r in report["results"]:
        by_point.setdefault((r["batch_size"], r["prompt_len"], r["new_tokens"]), {})[r["model"]] = r
    for (batch, prompt, new), cells in by_point.items():
        table.add_row(str(batch), str(prompt), str(new), *(_cell(cells[m], first=(i == 0))
                                                            for i, m in enumerate(models)))
    console.print(table)
    kind = report["results"][0]["memory_kind"] if report["results"] else "?"
    console.print(f"memory: {kind}; ideal = FLOPs-per-token ratio; "
                  "efficiency = measured decode speedup / ideal")
    _print_trust(report.get("trust", {}), console)
    if report.get("out"):
        print_path("Saved to ", report["out"], " (bench.json, bench.png, shortllm.json)")


def _cell(r: dict, first: bool):
    from rich.text import Text

    def rate(v):
        return f"{v:.1f}"

    def times(v):
        return f"x{v:.2f}"

    decode = "-" if r["decode_tokens_per_s"] is None else \
        f"{r['decode_tokens_per_s']:.1f} tok/s{_range(r, 'decode_tokens_per_s', rate)}"
    cell = Text(f"decode {decode}\n")
    if not first and r["speedup"] is not None:
        eff = f", {r['efficiency']:.0%}" if r["efficiency"] is not None else ""
        cell.append(f"x{r['speedup']:.2f}", "bold").append(
            f"{_range(r, 'speedup', times)} (ideal x{r['ideal_speedup']:.2f}{eff})\n")
    cell.append(f"first token {r['prefill_s'] * 1000:.0f} ms{_range(r, 'prefill_s', lambda v: f'{v * 1000:.0f}')}\n")
    latency = "" if first or r["latency_speedup"] is None else \
        f" (x{r['latency_speedup']:.2f}{_range(r, 'latency_speedup', times)})"
    cell.append(f"total {r['latency_s']:.2f} s{_range(r, 'latency_s', lambda v: f'{v:.2f}')}{latency}\n")
    cell.append(f"overall {r['throughput_tokens_per_s']:.1f} tok/s{_range(r, 'throughput_tokens_per_s', rate)}\n")
    cell.append(f"mem {_mb(r['peak_memory_bytes'])}{_range(r, 'peak_memory_bytes', lambda v: f'{v / 2**20:.1f}')}")
    if not r.get("trust", {"trusted": True})["trusted"]:
        cell.append("\nUNRELIABLE (see below)", "bold red")
    return cell
