"""Ctrl-C while the command line starts: one line and exit status 130, not a traceback.

``python -m jacgeom`` and the ``jacgeom`` script import the package (numpy, scipy, numba:
about a second) before any code of the command line runs, so a KeyboardInterrupt there
would end in a traceback through whichever import it hit (or, inside a compiled module's
initialisation, in "ImportError: initialization failed"). When, and only when, the process
was started as the command line, SIGINT exits at once with one line until the command line
has parsed its arguments, before any work. From there (:func:`working`) the first Ctrl-C is
a KeyboardInterrupt, which the command catches to finish what runs, save checkpoints and say
how to resume, and a second one exits at once with the command's line. A program that
imports jacgeom keeps Python's handler.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

# Exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def launched_as_command() -> bool:
    """True in ``python -m jacgeom ...`` and in the ``jacgeom`` console script."""
    if sys.argv[:1] == ["-m"]:  # runpy sets argv[0] to "-m" while it imports the package
        argv = sys.orig_argv
        for i, arg in enumerate(argv[1:], 1):
            if arg == "-m":
                return argv[i + 1 : i + 2] == ["jacgeom"]
            if arg.startswith("-m"):
                return arg == "-mjacgeom"
        return False
    path = sys.argv[0] if sys.argv else ""
    name = os.path.basename(path)
    if name == "jacgeom.exe":  # the Windows launcher; its script is inside the executable
        return True
    return name in ("jacgeom", "jacgeom-script.py") and _is_console_script(path)


def _is_console_script(path: str) -> bool:
    """Whether ``path`` is the script an installer writes for [project.scripts] (pip, uv
    and pipx write a few lines: ``from jacgeom.cli import main``, then ``sys.exit(main())``
    under ``if __name__ == "__main__":``), not a program of the user's that happens to be
    called jacgeom and imports jacgeom.cli."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)  # an installer's script is a few hundred bytes
    except OSError:
        return False
    return all(
        line in head
        for line in (b"from jacgeom.cli import main", b"__name__ ==", b"sys.exit(main())")
    )


def _exit_interrupted(signum: int, frame: FrameType | None) -> None:
    # os._exit, not SystemExit: an exception raised inside an import can be turned into
    # another one (an ImportError) with a traceback. Nothing is written yet, so nothing
    # needs unwinding.
    print("\njacgeom: interrupted while starting", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)


def guard() -> None:
    """Install the start-up handler if this process is the command line (called first
    thing by jacgeom/__init__.py)."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        and launched_as_command()
    ):
        signal.signal(signal.SIGINT, _exit_interrupted)


def release() -> None:
    """Back to Python's handler (KeyboardInterrupt), for ``jacgeom bench``, whose report is
    a program of its own."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is _exit_interrupted
    ):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupted_line() -> str:
    return "jacgeom: interrupted"


# The line a second Ctrl-C prints before it exits.
_last_line: Callable[[], str] = _interrupted_line
_interrupts = 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # The first Ctrl-C unwinds: a run then waits for the chunks running on its worker
    # threads, saves them and says what it saved. A second one must not interrupt that
    # wait: a KeyboardInterrupt inside Thread.join marks a thread that is still running as
    # finished (CPython 3.11 and 3.12, python/cpython#90882), so the interpreter no longer
    # waits for it at exit and finalises under it; when the thread comes back from a
    # compiled kernel and retakes the GIL, it is ended by unwinding through C++ frames,
    # which aborts the process ("terminate called without an active exception", SIGABRT).
    # os._exit ends every thread at once, and a chunk is on disk only once it was written
    # whole (checkpoint files are renamed into place), so exiting here loses nothing saved.
    global _interrupts
    _interrupts += 1
    if _interrupts == 1:
        raise KeyboardInterrupt
    try:
        line = _last_line()
    except Exception:  # noqa: BLE001 - exiting regardless: the plain line instead
        line = _interrupted_line()
    # os.write, not print: the handler may run while the main thread is inside a write to
    # sys.stderr, whose buffer is not reentrant.
    os.write(2, f"\n{line}\n".encode(errors="replace"))
    os._exit(EXIT_INTERRUPTED)


def _ours() -> bool:
    return threading.current_thread() is threading.main_thread() and signal.getsignal(
        signal.SIGINT
    ) in (_exit_interrupted, _interrupt)


def working() -> None:
    """The command line starts its work (called once its arguments are parsed): the first
    Ctrl-C is a KeyboardInterrupt, caught by the command; a second one, while the first is
    being handled, prints the line of :func:`on_second_interrupt` ("jacgeom: interrupted"
    by default) and exits at once with status 130. Only in the process of the command
    line: a program that calls jacgeom.cli.main keeps its own handler."""
    if _ours():
        signal.signal(signal.SIGINT, _interrupt)


def on_second_interrupt(last_line: Callable[[], str]) -> None:
    """What a second Ctrl-C prints before it exits (a command's line naming what it has
    saved). Called inside the signal handler: it must be quick and must not print."""
    global _last_line
    _last_line = last_line


def exiting() -> None:
    """The command is done: its output, or its one line about an interruption, is all that
    is left to write. Ctrl-C is ignored from here, as the exit follows at once; otherwise
    it would raise KeyboardInterrupt inside the interpreter's shutdown (a traceback after
    the output), or kill the process once Python has put back the default handler there."""
    if _ours():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


# Importing this module installs the guard: jacgeom/__init__.py imports it before anything
# heavy.
guard()
