"""Ctrl-C while the command line starts: one line and exit status 130, not a traceback.

``python -m jacgeom`` and the ``jacgeom`` script import the package (numpy, scipy, numba:
about a second) before any code of the command line runs, so a KeyboardInterrupt there
would end in a traceback through whichever import it hit (or, inside a compiled module's
initialisation, in "ImportError: initialization failed"). When, and only when, the process
was started as the command line, SIGINT exits at once with one line until the command line
has parsed its arguments, before any work (from there its own handler saves checkpoints
and says how to resume). A program that imports jacgeom keeps Python's handler.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
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
    """Back to Python's handler (KeyboardInterrupt): the command line calls it before it
    starts any work, from where it catches KeyboardInterrupt itself."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is _exit_interrupted
    ):
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Importing this module installs the guard: jacgeom/__init__.py imports it before anything
# heavy.
guard()
