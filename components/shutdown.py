"""How the program ends when the engine interrupts it.

When a step fails (or the user cancels), the engine stops the program with SIGINT while
registrations, invokes and log calls are still waiting on it. Python's default answer is
a KeyboardInterrupt in whatever was waiting: dozens of lines of the SDK's and the language
host's traceback, printed above the one error that matters (the failed step's, which the
engine has already reported). The program has nothing of its own to clean up (the engine
keeps the state), so it leaves at once and says nothing.
"""
from __future__ import annotations

import os
import signal
import sys

INTERRUPTED_EXIT = 1


def _leave(signum, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED_EXIT)


def exit_quietly_when_interrupted() -> None:
    signal.signal(signal.SIGINT, _leave)
