"""The program leaves quietly when the engine interrupts it (SIGINT after a failed step):
no traceback of whatever was waiting, only the failed step's own error remains."""
import signal
import subprocess
import sys

from components.shutdown import INTERRUPTED_EXIT
from tests.conftest import REPO

WAITING_PROGRAM = """
import signal, sys, threading, time
sys.path.insert(0, {repo!r})
# Python's own SIGINT handling, as the language host's Python has it, even where this test
# runs with SIGINT ignored (a background job of a shell: Python then keeps it ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)
{setup}
waiting = threading.Event()
worker = threading.Thread(target=waiting.wait, daemon=True)  # a pending call
worker.start()
print("ready", flush=True)
time.sleep(60)
"""


def interrupted(setup: str) -> subprocess.CompletedProcess:
    code = WAITING_PROGRAM.format(repo=str(REPO), setup=setup)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=30)
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


def test_an_interrupted_program_leaves_at_once_without_a_traceback():
    p = interrupted("from components.shutdown import exit_quietly_when_interrupted\n"
                    "exit_quietly_when_interrupted()")
    assert p.returncode == INTERRUPTED_EXIT != 0
    assert p.stderr == ""


def test_without_it_python_prints_a_traceback():
    # What the engine's cancellation looked like before (the check above can fail).
    p = interrupted("")
    assert "KeyboardInterrupt" in p.stderr and "Traceback" in p.stderr


def test_the_program_installs_it_first_when_the_engine_runs_it():
    # The language host runs the program as __main__; the tests' runpy does not.
    main = (REPO / "__main__.py").read_text()
    call = main.index('if __name__ == "__main__":\n')
    assert "exit_quietly_when_interrupted()" in main[call:call + 400]
    assert call < main.index("build_spec(") and call < main.index("PatroniCluster(")
