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
from shortllm.cli import score as score_cmd
from shortllm.cli.output import err_console, state
from shortllm.errors import Interrupted, ShortLLMError

app = typer.Typer(
    name="shortllm",
    help="Make LLMs shorter: remove whole transformer blocks, heal, and measure.\n\n"
    "Examples:\n\n"
    "  shortllm inspect\n\n"
    "  shortllm score --criterion ppl --out scores/\n\n"
    "  shortllm prune --ratio 0.2 --out pruned/\n\n"
    "  shortllm eval -m smollm2-135m -m pruned/ --ppl wikitext2 --data-dir ../shared/data",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help text is literal: option help holds brackets (hf:OWNER/NAME[/CONFIG][:SPLIT], "[default: ...]") that
    # rich markup would read as style tags (a crash, or text silently dropped). Plain click help, reflowed.
    rich_markup_mode=None,
)


def handle_errors(fn: Callable) -> Callable:
    """Turn ShortLLMError into one line on stderr and exit code 2 (traceback with SHORTLLM_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Interrupted as err:  # a run that says itself what it kept
            signame = _received.get("signal", "SIGINT")
            sys.stderr.write(f"interrupted ({signame}): {err.one_line()}\n")
            raise typer.Exit(143 if signame == "SIGTERM" else err.exit_code) from None
        except ShortLLMError as err:
            if os.environ.get("SHORTLLM_DEBUG") == "1":
                raise
            sys.stderr.write(f"error: {err.one_line()}\n")
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            signame = _received.get("signal", "SIGINT")
            sys.stderr.write(f"interrupted ({signame}); nothing was written\n")
            raise typer.Exit(143 if signame == "SIGTERM" else 130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shortllm {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv: debug).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors; no progress.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Make LLMs shorter: remove whole transformer blocks, heal, and measure."""
    state["quiet"], state["verbose"] = quiet, verbose
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    from rich.logging import RichHandler

    root = logging.getLogger("shortllm")
    root.handlers[:] = [RichHandler(console=err_console, show_path=False, show_time=False, markup=False)]
    root.setLevel(level)
    root.propagate = False
    # The libraries underneath are chatty; show their messages only when asked.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose >= 2 else "error")
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


app.command("inspect", no_args_is_help=False)(handle_errors(inspect_cmd.inspect))
app.command("score")(handle_errors(score_cmd.score))
app.command("prune")(handle_errors(prune_cmd.prune))
app.command("retrain")(handle_errors(retrain_cmd.retrain))
app.command("eval")(handle_errors(eval_cmd.eval))
app.command("bench")(handle_errors(bench_cmd.bench))


_received: dict[str, str] = {}


def _terminate(signum: int, frame: object) -> None:
    # Batch schedulers and containers stop jobs with SIGTERM: unwind exactly as Ctrl-C does, so temporary
    # folders are removed and a retrain says which checkpoint it kept.
    _received["signal"] = "SIGTERM"
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """Make SIGTERM behave like Ctrl-C (KeyboardInterrupt) in the main thread."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)


def main() -> None:
    """Console-script entry point."""
    install_signal_handlers()
    app()


if __name__ == "__main__":
    main()
