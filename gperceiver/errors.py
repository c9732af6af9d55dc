"""User-facing errors and the one table of exit codes every command uses.

Library code raises a subclass of `GPerceiverError` with a one-line message that
names the file, the line/column where known, and what is wrong. The CLI prints
that line and exits with the class's code; it never shows a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every `gperceiver` command."""

    OK = 0
    UNEXPECTED = 1  # a bug in gperceiver: please report it
    USAGE = 2  # bad command-line flags or parameter values
    INPUT_FORMAT = 3  # an input file is malformed
    INPUT_NOT_FOUND = 4  # an input path is missing or unreadable
    CANNOT_WRITE = 5  # the output exists (no --force) or cannot be written
    SYSTEM = 6  # the operating system failed us: disk full, out of memory, ...
    INTERRUPTED = 130  # Ctrl-C / SIGINT / SIGTERM


EXIT_CODE_HELP = "exit codes:\n" + "\n".join(
    f"  {int(c):>3}  {text}"
    for c, text in [
        (ExitCode.OK, "success"),
        (ExitCode.UNEXPECTED, "unexpected internal error (a bug: please report it)"),
        (ExitCode.USAGE, "usage: bad flags or parameter values"),
        (ExitCode.INPUT_FORMAT, "input format: a file is malformed (file, line, column named)"),
        (ExitCode.INPUT_NOT_FOUND, "input not found or unreadable"),
        (ExitCode.CANNOT_WRITE, "cannot write output (exists without --force, permissions)"),
        (ExitCode.SYSTEM, "system error (disk full, out of memory, ...)"),
        (ExitCode.INTERRUPTED, "interrupted (Ctrl-C); checkpoints written so far are kept"),
    ]
)


class GPerceiverError(Exception):
    """Base of every error meant for the user; carries its exit code."""

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(GPerceiverError):
    exit_code = ExitCode.USAGE


class InputFormatError(GPerceiverError):
    exit_code = ExitCode.INPUT_FORMAT

    def __init__(
        self,
        path: object,
        problem: str,
        *,
        line: int | None = None,
        column: str | int | None = None,
    ):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.column, self.problem = path, line, column, problem


class InputNotFoundError(GPerceiverError):
    exit_code = ExitCode.INPUT_NOT_FOUND


class CannotWriteError(GPerceiverError):
    exit_code = ExitCode.CANNOT_WRITE


class SystemFailure(GPerceiverError):
    exit_code = ExitCode.SYSTEM


class GPerceiverWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI shows each
    distinct one once, as `PROG: warning: ...`."""


class Note(GPerceiverWarning):
    """How an input was read or mapped (an original-tool flag or key, a block mapping);
    shown as `PROG: note: ...`."""
