#!/usr/bin/env bash
# The supported dependency range, tested at one end: a fresh virtual environment, then the README's test command.
#
#   scripts/compat.sh oldest   every runtime dependency at the lowest version pyproject.toml allows (uv's
#                              lowest-direct resolution), on Python $COMPAT_PYTHON (default: python3.10)
#   scripts/compat.sh newest   the newest releases, on Python $COMPAT_PYTHON (default: python3)
#
# On a pass the exact set is recorded, with the date, the Python and the result: oldest -> ci/oldest.txt,
# newest -> ci/constraints.txt (the set .ci/run installs) - and docs/compatibility.md's table is regenerated.
# Torch comes with the end's resolution (from PyPI: the CUDA build, several GB) unless $COMPAT_TORCH names one,
# e.g. COMPAT_TORCH="torch==2.13.0" where that CPU build lies on disk. The venv is kept in .compat-venv-END.
set -euo pipefail
END="${1:-}"
case "$END" in
  oldest) PY="${COMPAT_PYTHON:-python3.10}"; RECORD=ci/oldest.txt ;;
  newest) PY="${COMPAT_PYTHON:-python3}"; RECORD=ci/constraints.txt ;;
  *) echo "usage: scripts/compat.sh oldest|newest" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
"$PY" -c "" 2>/dev/null || { echo "$PY does not run here: set COMPAT_PYTHON to an interpreter" >&2; exit 2; }

VENV=".compat-venv-$END"
# A fresh machine has no converted embedded model: the run converts its own with the end's libraries.
export SHORTLLM_CACHE="${SHORTLLM_CACHE:-$PWD/$VENV/cache}"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
PYVER="$(python -c 'import platform; print(platform.python_version())')"

PINS="$(mktemp)"
trap 'rm -f "$PINS"' EXIT
if [ "$END" = oldest ]; then
  # uv resolves every direct dependency to its lowest allowed version (transitive ones stay newest-compatible).
  python -m pip install --quiet uv
  uv pip compile pyproject.toml --resolution lowest-direct --python-version "${PYVER%.*}" \
    --no-header --no-annotate --quiet > "$PINS"
  python -m pip uninstall --quiet --yes uv
fi
if [ -n "${COMPAT_TORCH:-}" ]; then
  python -m pip install --quiet "$COMPAT_TORCH"
  sed -i '/^torch==/d' "$PINS"
  echo "torch==$(python -c 'import torch; print(torch.__version__)')" >> "$PINS"  # no pin may pull another
fi

# The README's test command, verbatim, with the pins as pip constraints.
CMD="$(sed -n '/<!-- test-command -->/,/<!-- \/test-command -->/p' README.md | grep -v '^<!--' | grep -v '^```')"
echo "+ PIP_CONSTRAINT=<$END pins> $CMD"
if PIP_CONSTRAINT="$PINS" bash -euo pipefail -c "$CMD" 2>&1 | tee "$VENV/test.log"; then
  STATUS=0
else
  STATUS=1
fi
SUMMARY="$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$VENV/test.log" | tail -1 | tr -d '=' | xargs || true)"
if [ "$STATUS" -ne 0 ]; then
  echo "compat $END: the test suite FAILED ($SUMMARY); nothing recorded" >&2
  exit 1
fi

# Record the exact set that passed. Torch and its CUDA companions are kept out of the pins: .ci/run installs
# the machine's own torch build first; the version tested is kept in the header.
TORCH="$(python -c 'import torch; print(torch.__version__)')"
{
  echo "# The exact set 'scripts/compat.sh $END' passed with; regenerate with that command."
  echo "# date: $(date -u +%Y-%m-%d)"
  echo "# python: $PYVER"
  echo "# torch: $TORCH"
  echo "# result: $SUMMARY"
  echo "# command: scripts/compat.sh $END${COMPAT_TORCH:+ (COMPAT_TORCH=$COMPAT_TORCH)}"
  python -m pip freeze --exclude-editable | grep -viE '^(torch|triton|nvidia-|cuda-|uv)[=-]' | sort -f
} > "$RECORD"
python scripts/compat_pins.py table
echo "compat $END: passed ($SUMMARY); recorded $RECORD and regenerated docs/compatibility.md"
