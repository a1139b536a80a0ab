"""The ``shortllm`` command: registers the verbs, the global options, and the one error handler."""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Annotated, Callable

import typer

from shortllm import __version__
from shortllm.cli import bench as bench_cmd
from shortllm.cli import eval as eval_cmd
from shortllm.cli import inspect as inspect_cmd
from shortllm.cli import prune as prune_cmd
from shortllm.cli import retrain as retrain_cmd
from shortllm.cli import run as run_cmd
from shortllm.cli import score as score_cmd
from shortllm.cli.click_errors import OneLineErrors, errors_propagating
from shortllm.cli.help import GroupedHelp
from shortllm.cli.output import PhaseHandler, err_console, state
from shortllm.errors import DeviceError, Interrupted, ShortLLMError, reason

app = typer.Typer(
    name="shortllm",
    cls=OneLineErrors,
    help="Make LLMs shorter: remove whole transformer blocks, heal, and measure.\n\n"
    "Examples:\n\n"
    "\b\n"  # click keeps this paragraph as written: examples must not be re-wrapped, or they break when pasted
    "  shortllm inspect\n"
    "  shortllm score --criterion ppl --out scores/\n"
    "  shortllm prune --ratio 0.2 --out pruned/\n"
    "  shortllm eval -m smollm2-135m -m pruned/ --ppl wikitext2 --tasks piqa --limit 200 --data-dir ../shared/data",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help text is literal: option help holds brackets (hf:OWNER/NAME[/CONFIG][:SPLIT], "[default: ...]") that
    # rich markup would read as style tags (a crash, or text silently dropped). Plain click help, reflowed.
    rich_markup_mode=None,
)


MEMORY_HINT = "use a smaller --batch-size (or --seq-len, --samples), --dtype bfloat16, or a device with more memory"


def as_user_error(err: BaseException) -> ShortLLMError | None:
    """The ShortLLMError that a failure of the machine means to its user, or None for anything else (a bug).

    Out of memory (torch's ``OutOfMemoryError``, ``MemoryError``, the CPU allocator's RuntimeError) and refusals of
    the file system (``OSError``: a full disk, a permission, a missing file) are caused by the run's size or its
    paths; the user fixes them, so they get the one-line treatment too.
    """
    first = reason(err)
    names = {cls.__name__ for cls in type(err).__mro__}
    if "OutOfMemoryError" in names or isinstance(err, MemoryError) or (
            isinstance(err, RuntimeError) and ("out of memory" in first or "can't allocate memory" in first)):
        return DeviceError(f"out of memory ({first})", MEMORY_HINT)
    if isinstance(err, OSError):
        what = f"{err.strerror}: {err.filename}" if err.strerror and err.filename else first
        return ShortLLMError(what, "check the path, its permissions and the free disk space (SHORTLLM_DEBUG=1 "
                             "shows the traceback)")
    return None


def handle_errors(fn: Callable) -> Callable:
    """Turn ShortLLMError into one line on stderr and exit code 2 (traceback with SHORTLLM_DEBUG=1).

    Failures of the machine that the user fixes (memory, files: :func:`as_user_error`) are shown the same way;
    anything else is a bug and keeps its traceback.
    """

    def fail(err: ShortLLMError) -> typer.Exit:
        sys.stderr.write(f"error: {err.one_line()}\n")
        return typer.Exit(err.exit_code)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if errors_propagating():  # a caller that handles the verb's errors itself (the recipe runner)
            return fn(*args, **kwargs)
        debug = os.environ.get("SHORTLLM_DEBUG") == "1"
        try:
            return fn(*args, **kwargs)
        except Interrupted as err:  # a run that says itself what it kept
            signame = _received.get("signal", "SIGINT")
            sys.stderr.write(f"interrupted ({signame}): {err.one_line()}\n")
            raise typer.Exit(_SIGNAL_EXIT.get(signame, err.exit_code)) from None
        except ShortLLMError as err:
            if debug:
                raise
            raise fail(err) from None
        except KeyboardInterrupt:
            signame = _received.get("signal", "SIGINT")
            sys.stderr.write(f"interrupted ({signame}); nothing was written\n")
            raise typer.Exit(_SIGNAL_EXIT.get(signame, 130)) from None
        except Exception as err:
            mapped = as_user_error(err)
            if mapped is None or debug:
                raise
            raise fail(mapped) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shortllm {__version__}")
        raise typer.Exit()


class PlainFormatter(logging.Formatter):
    """``warning: message``, in the style of ``error: ...``, for stderr that is not a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        return text + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


@app.callback()
def main_options(
    verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True,
        help="More logging, with the libraries' own warnings and progress bars (-vv: debug).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors; no progress.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Make LLMs shorter: remove whole transformer blocks, heal, and measure."""
    # click runs this before it parses the verb's own options: anything slow here delays every usage error.
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose ask for opposite things: give one of them")
    state["quiet"], state["verbose"] = quiet, verbose
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    root = logging.getLogger("shortllm")
    if err_console.is_terminal:
        from rich.logging import RichHandler

        shown: logging.Handler = RichHandler(console=err_console, show_path=False, show_time=False, markup=False)
    else:  # a pipe or a log file: one record, one line (rich would fold it at 80 columns)
        shown = logging.StreamHandler(sys.stderr)
        shown.setFormatter(PlainFormatter())
    shown.setLevel(level)
    # Records marked extra={"phase": True} name what a long step is doing: PhaseHandler shows them as the progress
    # display's current phase at any verbosity (none with -q), so INFO gets through the logger.
    root.handlers[:] = [shown, PhaseHandler()]
    root.setLevel(min(level, logging.INFO))
    root.propagate = False
    quiet_libraries(verbose)


# What the libraries underneath read when they are imported. shortllm sets them (unless the user did) so that their
# logs, warnings and progress bars stay off the terminal unless asked for with -v; nothing heavy is imported for it.
LIBRARY_LOG_ENV = ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "HF_HUB_VERBOSITY")
LIBRARY_BAR_ENV = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")
LIBRARY_LOGGERS = ("transformers", "datasets", "huggingface_hub", "lm_eval", "accelerate", "peft")
_USER_ENV = frozenset(name for name in LIBRARY_LOG_ENV + LIBRARY_BAR_ENV if name in os.environ)
_IGNORE_WARNINGS = ("ignore", None, Warning, None, 0)


def quiet_libraries(verbose: int) -> None:
    """Silence the libraries' own logs, Python warnings and progress bars unless asked for.

    -v shows their warnings and bars; -vv also the info that transformers, datasets and the hub print.

    Without -v a run prints only shortllm's own lines: an error stays one line, and lm-eval's or ``datasets``'
    bars do not leak to stderr. Nothing is imported: environment variables cover the libraries imported later
    (``TQDM_DISABLE`` is also honoured by the lm-eval bridge for the bars lm-eval enables explicitly) and logger
    levels, set by name, cover the ones already imported. Variables the user set are left alone.

    Args:
        verbose: the count of ``-v`` flags.
    """
    import warnings

    lib_level = (logging.ERROR, logging.WARNING, logging.INFO)[min(verbose, 2)]
    wanted = dict.fromkeys(LIBRARY_LOG_ENV, logging.getLevelName(lib_level).lower())
    wanted.update(dict.fromkeys(LIBRARY_BAR_ENV, None if verbose else "1"))
    for name, value in wanted.items():
        if name in _USER_ENV:
            continue
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    logging.getLogger().setLevel(lib_level)  # every library logger that sets no level of its own
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(lib_level)
    while _IGNORE_WARNINGS in warnings.filters:
        warnings.filters.remove(_IGNORE_WARNINGS)
    if not verbose and not sys.warnoptions:  # library warnings (torch, transformers) print two lines each
        warnings.simplefilter("ignore")
    hf_logging = sys.modules.get("transformers.utils.logging")  # imported before the env was set (in-process)
    if not verbose and hf_logging is not None:
        hf_logging.disable_progress_bar()


app.command("inspect", no_args_is_help=False, cls=GroupedHelp)(handle_errors(inspect_cmd.inspect))
app.command("score", cls=GroupedHelp)(handle_errors(score_cmd.score))
app.command("prune", cls=GroupedHelp)(handle_errors(prune_cmd.prune))
app.command("retrain", cls=GroupedHelp)(handle_errors(retrain_cmd.retrain))
app.command("eval", cls=GroupedHelp)(handle_errors(eval_cmd.eval))
app.command("bench", cls=GroupedHelp)(handle_errors(bench_cmd.bench))
app.command("run", cls=GroupedHelp)(handle_errors(run_cmd.run))


_received: dict[str, str] = {}
# The shell's convention: 128 + the signal number.
_SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


def _terminate(signum: int, frame: object) -> None:
    # Batch schedulers and containers stop jobs with SIGTERM, a closed terminal or ssh session sends SIGHUP:
    # unwind exactly as Ctrl-C does, so temporary folders are removed and a retrain says which checkpoint it kept.
    import signal

    _received["signal"] = signal.Signals(signum).name
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """Make SIGTERM and SIGHUP behave like Ctrl-C (KeyboardInterrupt) in the main thread."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    if hasattr(signal, "SIGHUP"):  # not on Windows
        signal.signal(signal.SIGHUP, _terminate)


def main() -> None:
    """Console-script entry point."""
    install_signal_handlers()
    app()


if __name__ == "__main__":
    main()
