"""What a bench run is asked for, checked before anything loads: the models, the sweep (batch sizes x prompt
lengths x new tokens), warm-up and repeats, and the order the models run in (interleaved, reversed every
other step)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shortllm.benchmark.trust import Thresholds
from shortllm.data.context import check_context, context_limit
from shortllm.errors import BenchSettingsError
from shortllm.models.loading import LoadSettings


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
