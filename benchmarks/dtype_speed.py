"""Forward time of the embedded model in float32 against bfloat16 on this machine's CPU.

CPUs without native bf16 matrix instructions (AVX-512 BF16 or AMX) run bfloat16 matmuls far slower than float32;
this decides whether a bf16 checkpoint is better computed in its own dtype or upcast (block by block) on a CPU.
Reports the CPU flags that matter, and the mean of two timed forwards of 4 x 128 tokens (after one warm-up) per
dtype, with one torch thread.

    python benchmarks/dtype_speed.py --out benchmarks/results/dtype_speed.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/dtype_speed.json", help="JSON report path")
    args = parser.parse_args()
    import torch

    from shortllm.models.loading import LoadSettings, load_model

    torch.set_num_threads(args.threads)
    flags = set()
    try:
        line = next(x for x in open("/proc/cpuinfo") if x.startswith("flags"))
        flags = {f for f in line.split() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}
    except (OSError, StopIteration):
        pass
    model = load_model(None, LoadSettings(dtype="float32", device="cpu")).model.eval()
    ids = torch.randint(0, model.config.vocab_size, (4, 128))
    rows = {}
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        with torch.no_grad():
            model(input_ids=ids)  # warm-up
            t = time.perf_counter()
            for _ in range(2):
                model(input_ids=ids)
        rows[str(dtype).removeprefix("torch.")] = round((time.perf_counter() - t) / 2, 3)
        print(f"{dtype}: {rows[str(dtype).removeprefix('torch.')]} s per forward", file=sys.stderr)
    emit({"benchmark": "dtype_speed", "machine": machine(), "cpu_flags": sorted(flags), "tokens": [4, 128],
          "seconds_per_forward": rows, "bf16_over_fp32": round(rows["bfloat16"] / rows["float32"], 2)}, args.out)


if __name__ == "__main__":
    main()
