"""Peak resident memory of one AdamW step: torch's default (foreach) implementation against the fused kernel that
``retrain`` uses (``shortllm.optim.adamw``), on float32 parameters of a given total size.

Each implementation runs in a fresh process (so each peak is its own): the parameters and their gradients are
allocated and two steps taken; then the peak RSS (``VmHWM``) is compared with the resident memory after the
steps (weights, gradients and the two moments): the difference is the temporary memory of the step itself.

    python benchmarks/adamw_memory.py                       # 110M parameters (the 20%-pruned embedded model)
    python benchmarks/adamw_memory.py --params 20000000 --out /dev/stdout
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine  # noqa: E402

CHILD = """
import json, sys, torch
torch.set_num_threads(1)
n, impl = int(sys.argv[1]), sys.argv[2]
def status(key):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) / 1024
side = 2048
params = [torch.nn.Parameter(torch.randn(side, side)) for _ in range(max(1, n // (side * side)))]
for p in params:
    p.grad = torch.randn_like(p)
if impl == 'fused':
    from shortllm.optim import adamw
    opt = adamw(params, lr=1e-4)
else:
    opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)
opt.step()  # the first step allocates the two moments
opt.step()
print(json.dumps({'fused': opt.defaults.get('fused'), 'params': sum(p.numel() for p in params),
                  'rss_after_steps_mib': round(status('VmRSS'), 1), 'peak_rss_mib': round(status('VmHWM'), 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=int, default=110_000_000, help="float32 parameters (default 110M)")
    parser.add_argument("--out", default="benchmarks/results/adamw_memory.json", help="JSON report path")
    args = parser.parse_args()
    rows = {}
    for impl in ("foreach", "fused"):
        done = subprocess.run([sys.executable, "-c", CHILD, str(args.params), impl], capture_output=True, text=True,
                              check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["step_transient_mib"] = round(row["peak_rss_mib"] - row["rss_after_steps_mib"], 1)
        rows[impl] = row
        print(f"{impl}: peak {row['peak_rss_mib']} MiB, {row['step_transient_mib']} MiB above the steady state",
              file=sys.stderr)
    emit({"benchmark": "adamw_memory", "machine": machine(), "rows": rows}, args.out)


if __name__ == "__main__":
    main()
