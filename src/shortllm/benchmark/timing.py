"""Timing one generation: fixed prompts, forced length, time to first token, decode rate, peak memory.

One call of :func:`timed_generate` runs ``model.generate`` once, greedy, forced to exactly ``new_tokens``
tokens per row (``min_new_tokens = max_new_tokens``: the end-of-sequence logit is masked until the last
step, so EOS cannot stop it early). A stopping criterion, which ``generate`` calls once after every step,
timestamps each token; on CUDA it synchronises first, so each stamp is when that token really exists.
Time to first token is the first stamp (prefill forward and first-token selection, plus ``generate``'s own
setup); decode time is from the first stamp to the last.
"""

from __future__ import annotations

import ctypes
import gc
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortllm.errors import ShortLLMError
from shortllm.wording import plural

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def synthetic_prompts(vocab_size: int, batch: int, length: int, seed: int,
                      avoid: Iterable[int] = ()) -> list[list[int]]:
    """``batch`` fixed pseudo-random prompts of ``length`` token ids (distinct rows, no special tokens).

    The same seed gives the same prompts for every model and every repeat, so all runs do the same work.
    """
    skip = set(avoid)
    rng = random.Random(seed)
    rows = []
    for _ in range(batch):
        row: list[int] = []
        while len(row) < length:
            token = rng.randrange(vocab_size)
            if token not in skip:
                row.append(token)
        rows.append(row)
    return rows


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Left-pad token rows to a common length. Returns (input_ids, attention_mask) as lists.

    Decoder-only models continue from the last position of each row, so padding goes on the left.
    """
    width = max(len(r) for r in rows)
    ids = [[pad_id] * (width - len(r)) + list(r) for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return ids, mask


def special_ids(model: Any, tokenizer: Any) -> tuple[int, int | list[int] | None, set[int]]:
    """(pad id, eos id(s), all special ids) of a model; pad falls back to eos, then to 0."""
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None and tokenizer is not None:
        eos = tokenizer.eos_token_id
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    if pad is None:
        pad = getattr(gen, "pad_token_id", None)
    if pad is None:
        pad = eos[0] if isinstance(eos, list) and eos else eos
    if pad is None:
        pad = 0
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special.update(e for e in (eos if isinstance(eos, list) else [eos]) if e is not None)
    special.add(pad)
    return int(pad), eos, special


# ----------------------------------------------------------------------------------------------- memory

def _status_bytes(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _trim_heap() -> None:
    # Give freed heap pages back to the OS, so a run's allocations show up as RSS growth again instead of
    # silently reusing pages an earlier run left resident.
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # Linux >= 4.0: reset VmHWM (peak RSS) to the current RSS
        return True
    except OSError:
        return False


class MemoryMeter:
    """Peak memory growth over one run.

    ``kind`` says what is measured:
    - ``cuda_max_memory_allocated``: ``torch.cuda.max_memory_allocated`` after a reset, minus what was
      allocated at the start (so the weights of every loaded model are not counted);
    - ``cpu_peak_rss_growth``: the process's peak resident set (VmHWM, reset through
      ``/proc/self/clear_refs``) minus its resident set at the start; the heap is trimmed first;
    - ``unavailable``: neither works here (the bytes are None).
    """

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        if self.cuda:
            self.kind = "cuda_max_memory_allocated"
        elif _status_bytes("VmHWM") is not None and _reset_peak_rss():
            self.kind = "cpu_peak_rss_growth"
        else:
            self.kind = "unavailable"
        self._base: int | None = None

    def start(self) -> None:
        """Reset the peak and remember the current level."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        elif self.kind == "cpu_peak_rss_growth":
            _trim_heap()
            _reset_peak_rss()
            self._base = _status_bytes("VmRSS")

    def stop(self) -> int | None:
        """Peak growth in bytes since :meth:`start` (None when unavailable)."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated() - (self._base or 0))
        if self.kind == "cpu_peak_rss_growth" and self._base is not None:
            peak = _status_bytes("VmHWM")
            return None if peak is None else max(0, peak - self._base)
        return None


# ----------------------------------------------------------------------------------------------- timing

@dataclass(frozen=True)
class RunTiming:
    """One generate call: when its tokens appeared, and how much memory it took."""

    batch_size: int
    new_tokens: int  # generated per row, checked
    prefill_s: float  # time to first token
    decode_s: float  # first token -> last token
    latency_s: float  # the whole generate call
    peak_memory_bytes: int | None

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens per second after the first (all rows); None with a single new token."""
        if self.new_tokens < 2 or self.decode_s <= 0:
            return None
        return self.batch_size * (self.new_tokens - 1) / self.decode_s

    @property
    def throughput_tokens_per_s(self) -> float:
        """Generated tokens (all rows) per second of the whole call."""
        return self.batch_size * self.new_tokens / self.latency_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "prefill_s": self.prefill_s, "decode_s": self.decode_s, "latency_s": self.latency_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "throughput_tokens_per_s": self.throughput_tokens_per_s,
            "peak_memory_bytes": self.peak_memory_bytes,
        }


def _clock(cuda: bool):
    import torch

    def now() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    return now


def timed_generate(model: Any, input_ids: Any, attention_mask: Any, new_tokens: int, pad_id: int,
                   eos_id: int | list[int] | None, meter: MemoryMeter) -> tuple[RunTiming, Any]:
    """Generate exactly ``new_tokens`` greedy tokens per row and time it.

    Args:
        model: a loaded causal LM in eval mode.
        input_ids, attention_mask: left-padded prompt tensors on the model's device.
        new_tokens: tokens to generate per row (>= 1).
        pad_id, eos_id: the model's padding and end-of-sequence ids (EOS is masked until the end).
        meter: measures peak memory around the call.

    Returns:
        (timing, output ids).

    Raises:
        ShortLLMError: if the model did not produce exactly ``new_tokens`` tokens per row.
    """
    import torch
    from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

    from shortllm.models.generation import plain_generation

    now = _clock(input_ids.device.type == "cuda")
    stamps: list[float] = []

    class _Stamp(StoppingCriteria):  # called once per generated token; never stops anything
        def __call__(self, ids, scores, **kwargs):
            stamps.append(now())
            return torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)

    config = GenerationConfig(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=1,
        eos_token_id=eos_id, pad_token_id=pad_id, use_cache=True,
        temperature=1.0, top_p=1.0, top_k=50,  # neutral values, so sampling defaults raise no warnings
    )
    meter.start()
    t0 = now()
    with torch.inference_mode(), plain_generation(model):
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                             stopping_criteria=StoppingCriteriaList([_Stamp()]))
    t1 = now()
    peak = meter.stop()
    produced = out.shape[1] - input_ids.shape[1]
    if produced != new_tokens or len(stamps) != new_tokens:
        raise ShortLLMError(
            f"generation produced {plural(produced, 'token')} per row instead of {new_tokens}",
            "please report this with SHORTLLM_DEBUG=1 output",
        )
    timing = RunTiming(
        batch_size=int(input_ids.shape[0]), new_tokens=new_tokens, prefill_s=stamps[0] - t0,
        decode_s=stamps[-1] - stamps[0], latency_s=t1 - t0, peak_memory_bytes=peak,
    )
    return timing, out
