"""Temporary folders beside an output, named by their process so that a later run can tell abandoned ones.

Every atomic write (``--out`` folders, model conversions) builds its result in ``.NAME.tmp-PID-XXXX`` beside
``NAME`` and renames it into place. A run killed hard (SIGKILL, power loss) cannot remove its folder; the next
write of the same output removes the folders whose process is gone and leaves those of running processes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from shortllm.wording import plural

log = logging.getLogger(__name__)


def make_parents(out: Path) -> list[Path]:
    """Create the missing folders above ``out``; returns those it created, outermost first, so that a failed
    run can remove them again (:func:`remove_created`)."""
    missing = [p for p in reversed(out.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        remove_created(missing)  # those made before the failure
        raise
    return missing


def remove_created(folders: list[Path]) -> None:
    """Remove the folders :func:`make_parents` created, innermost first, where they are still empty: after a
    failed run nothing remains that was not there before."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty (something else wrote there) or already gone
            return


def make_temp_beside(out: Path) -> Path:
    """Create ``.NAME.tmp-PID-XXXX`` in ``out``'s parent (which must exist) and return it."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def remove_stale_temp(out: Path) -> list[Path]:
    """Remove the temporary folders an earlier write of ``out`` left when its process was killed hard.

    Temporary folders are named ``.NAME.tmp-PID-*`` (and ``.NAME.old-PID`` during the final swap); those whose
    process no longer exists are removed, those of a running process (a concurrent run) are left alone.

    Returns:
        The folders removed.
    """
    removed = []
    for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*"):
        for stale in out.parent.glob(pattern):
            pid = stale.name[len(f".{out.name}.tmp-"):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)) and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
                removed.append(stale)
    if removed:
        log.info("removed %s left by interrupted runs beside %s", plural(len(removed), "temporary folder"),
                 out)
    return removed


