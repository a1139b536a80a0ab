"""Which newest releases differ from the recorded set (ci/constraints.txt): read from pip's installation report.

    python -m pip install --dry-run --ignore-installed --quiet --report R.json -e ".[dev]"
    python scripts/drift.py R.json            prints 'name recorded -> newest' lines; exit 0 either way

Torch and its CUDA companions (CI installs the machine's own torch build) and pip's own tools are left out, as in the
recorded set (`pip freeze` leaves out pip and setuptools).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat_pins import ROOT, read_set  # noqa: E402

SKIP = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*|shortllm|pip|setuptools|wheel)$")


def newest(report: Path) -> dict[str, str]:
    """{normalised name: version} of what pip would install, from its ``--report`` JSON."""
    out = {}
    for item in json.loads(report.read_text())["install"]:
        meta = item["metadata"]
        out[re.sub(r"[-_.]+", "-", meta["name"]).lower()] = meta["version"]
    return out


def main() -> None:
    _, recorded = read_set(ROOT / "ci" / "constraints.txt")
    fresh = newest(Path(sys.argv[1]))
    for name in sorted(set(recorded) | set(fresh)):
        if SKIP.match(name) or recorded.get(name) == fresh.get(name):
            continue
        print(f"{name} {recorded.get(name, '(none)')} -> {fresh.get(name, '(none)')}")


if __name__ == "__main__":
    main()
