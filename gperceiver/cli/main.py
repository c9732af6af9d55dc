"""`gperceiver` entry point: parse, dispatch to a subcommand, map errors to exit codes."""

from __future__ import annotations

import argparse
import errno
import functools
import importlib
import logging
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from gperceiver import __version__
from gperceiver.cluster import dask_scheduler
from gperceiver.errors import EXIT_CODE_HELP, ExitCode, GPerceiverError, GPerceiverWarning, Note

# Subcommand modules, in the order --help lists them; each has register(subparsers).
SUBCOMMANDS = [
    "convert", "info", "filter", "upgrade", "pretrain", "fit", "predict", "embed", "impute",
    "baseline", "cv", "plot",
]


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps line breaks in descriptions; shows defaults, except the empty ones."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with our usage exit code and the exit-code table in every --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", Formatter)
        epilog = kwargs.get("epilog")
        kwargs["epilog"] = f"{epilog}\n\n{EXIT_CODE_HELP}" if epilog else EXIT_CODE_HELP
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gperceiver",
        description="Perceiver-style genomic prediction from chunked Zarr genotype stores.",
    )
    parser.add_argument("--version", action="version", version=f"gperceiver {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"gperceiver.cli.{name}").register(sub)
    return parser


PROG = "gperceiver"


# what str.splitlines breaks at: shown escaped, so a message stays one line whatever
# the input put into it (a stray carriage return in a cell)
LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def report(message: str, prog: str = PROG, kind: str = "error") -> None:
    print(f"{prog}: {kind}: {message.translate(LINE_BREAKS)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return (and, as a script, exit with) its documented exit code."""
    return run_command(build_parser().parse_args(argv))


@contextmanager
def warnings_once(prog: str) -> Iterator[None]:
    """Show each distinct warning once, as one line `PROG: warning: ...` (`note` for a
    Note); warnings nobody acts on are filtered where they arise (engine, loader)."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message).splitlines()[0] if str(message) else category.__name__
        if text not in seen:
            seen.add(text)
            report(text, prog, "note" if issubclass(category, Note) else "warning")

    with warnings.catch_warnings():
        warnings.simplefilter("always", GPerceiverWarning)  # `seen` keeps each to once
        warnings.showwarning = show
        yield


def run_command(args: argparse.Namespace, prog: str = PROG) -> int:
    """Call `args.func(args)`, turning every failure into one line and its exit code."""
    # A batch scheduler's SIGTERM ends the run like Ctrl-C: outputs stay atomic.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # `gperceiver info STORE | head` ends quietly, like any Unix tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    report_here = functools.partial(report, prog=prog)
    try:
        with warnings_once(prog), dask_scheduler(getattr(args, "scheduler", None)):
            args.func(args)
    except GPerceiverError as e:
        report_here(e.message)
        return int(e.exit_code)
    except KeyboardInterrupt:
        # Work cut short inside zarr's async I/O leaves coroutines that would warn at exit
        # (as warnings) and tasks that asyncio's logger reports as destroyed while pending.
        warnings.simplefilter("ignore")
        logging.getLogger("asyncio").disabled = True
        report_here("interrupted")
        return int(ExitCode.INTERRUPTED)
    except MemoryError:
        report_here("out of memory; try a smaller --samples-chunk / --batch-size")
        return int(ExitCode.SYSTEM)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM):
            report_here(f"{e.filename or ''}: {os.strerror(e.errno)}".lstrip(": "))
            return int(ExitCode.SYSTEM)
        return _unexpected(e, prog)
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, no traceback
        return _unexpected(e, prog)
    return int(ExitCode.OK)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _unexpected(e: BaseException, prog: str) -> int:
    if os.environ.get("GPERCEIVER_DEBUG"):
        traceback.print_exc()
    report(f"unexpected {type(e).__name__}: {e} (a bug in gperceiver; rerun with "
           "GPERCEIVER_DEBUG=1 for the traceback and report it)", prog)
    return int(ExitCode.UNEXPECTED)


def entry() -> None:
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C before a command's own handling began (imports)
        report("interrupted")
        code = int(ExitCode.INTERRUPTED)
    sys.exit(code)


if __name__ == "__main__":
    entry()
