"""``shortllm bench``: generation latency, throughput and memory of several models side by side."""

from __future__ import annotations

import shlex
import sys
from typing import Annotated, Optional

import typer

from shortllm.cli.options import (DeviceMapOpt, DeviceOpt, DtypeOpt, JsonOpt, ModelsOpt, OutOpt, OverwriteOpt,
                                  RevisionOpt, SeedOpt, TrustRemoteCodeOpt, load_settings)
from shortllm.cli.output import console, err_console, plain_column, print_json, print_path, state

BatchSizesOpt = Annotated[str, typer.Option("--batch-sizes", help="Batch sizes to sweep, e.g. 1,8.")]
PromptLenOpt = Annotated[str, typer.Option("--prompt-len", help="Prompt length(s) in tokens, e.g. 64,512.")]
NewTokensOpt = Annotated[str, typer.Option("--new-tokens", help="New tokens per row (forced), e.g. 128.")]
WarmupOpt = Annotated[int, typer.Option("--warmup", help="Untimed runs per model and sweep point.")]
RepeatsOpt = Annotated[int, typer.Option("--repeats", help="Timed runs per model and sweep point (median).")]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option("--threads", help="torch CPU threads (default: torch's own).", show_default=False),
]


def bench(
    model: ModelsOpt = None,
    batch_sizes: BatchSizesOpt = "1,8",
    prompt_len: PromptLenOpt = "64",
    new_tokens: NewTokensOpt = "128",
    warmup: WarmupOpt = 2,
    repeats: RepeatsOpt = 5,
    threads: ThreadsOpt = None,
    out: OutOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    revision: RevisionOpt = None,
    seed: SeedOpt = 1234,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure generation speed and memory of one or more models side by side, against the ideal speedup.

    Per model and sweep point: time to first token, decode tokens/s, latency, total tokens/s, peak memory.

    Generation is greedy and forced to exactly --new-tokens tokens; models alternate run by run.

    Ideal speedup over the first model = ratio of forward FLOPs per token; efficiency = measured / ideal.

    With --out: bench.json (every raw timing and the manifest), bench.png, shortllm.json.

    Examples:

      shortllm bench -m smollm2-135m -m pruned/ --batch-sizes 1,4 --new-tokens 32

      shortllm bench -m pruned/ --out bench/ --json

      shortllm bench -m Qwen/Qwen2.5-0.5B -m qwen-short/ --device cuda --dtype bfloat16 --batch-sizes 1,8,32
    """
    from shortllm.benchmark.run import BenchRequest, parse_sizes, run_bench

    request = BenchRequest(
        models=list(model) if model else [None],
        batch_sizes=parse_sizes(batch_sizes, "--batch-sizes"),
        prompt_lens=parse_sizes(prompt_len, "--prompt-len"),
        new_tokens=parse_sizes(new_tokens, "--new-tokens"),
        warmup=warmup, repeats=repeats, threads=threads, seed=seed,
        settings=load_settings(dtype, device, device_map, trust_remote_code, revision),
        out=out, overwrite=overwrite, command=shlex.join(["shortllm", *sys.argv[1:]]),
    )
    with _progress() as advance:
        result = run_bench(request, progress=advance)
    if json_out:
        print_json(result.as_dict())
        return
    _render(result.as_dict())


class _progress:
    """A rich progress bar over the sweep's generate calls on stderr (off with --quiet or no terminal)."""

    def __enter__(self):
        self.bar = None
        if state["quiet"] or not err_console.is_terminal:
            return lambda done, total, what: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress(plain_column(), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=err_console, transient=True)
        self.bar.start()
        task = self.bar.add_task("loading models", total=None)

        def advance(done: int, total: int, what: str) -> None:
            self.bar.update(task, completed=done, total=total, description=what)

        return advance

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def _mb(n: int | None) -> str:
    return "unknown" if n is None else f"+{n / 2**20:.1f} MiB"


def _render(report: dict) -> None:
    from rich.table import Table

    models = [m["label"] for m in report["models"]]
    env = report["environment"]
    table = Table(title=f"Generation on {env['device']} ({env['torch_threads']} threads), median of "
                        f"{report['settings']['repeats']} repeats; speedups vs {models[0]}", show_lines=True)
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
    if report.get("out"):
        print_path("Saved to ", report["out"], " (bench.json, bench.png, shortllm.json)")


def _cell(r: dict, first: bool):
    from rich.text import Text

    decode = "-" if r["decode_tokens_per_s"] is None else f"{r['decode_tokens_per_s']:.1f} tok/s"
    cell = Text(f"decode {decode}\n")
    if not first and r["speedup"] is not None:
        eff = f", {r['efficiency']:.0%}" if r["efficiency"] is not None else ""
        cell.append(f"x{r['speedup']:.2f}", "bold").append(f" (ideal x{r['ideal_speedup']:.2f}{eff})\n")
    cell.append(f"first token {r['prefill_s'] * 1000:.0f} ms, total {r['latency_s']:.2f} s"
                + ("" if first or r["latency_speedup"] is None else f" (x{r['latency_speedup']:.2f})") + "\n")
    cell.append(f"{r['throughput_tokens_per_s']:.1f} tok/s overall, mem {_mb(r['peak_memory_bytes'])}")
    return cell
