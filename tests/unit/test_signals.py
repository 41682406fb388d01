"""``infrastructure.signals.stop_on_signals``: a signal that lands while the main thread holds the event's own lock
(inside ``Event.wait``) still stops the process, where a handler calling ``Event.set`` hung it for good.

Each case runs in a child interpreter with a deadline, so a regression fails the test instead of hanging the suite.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True,
                              text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the process hung: {exc}") from None


def test_a_signal_while_the_main_thread_holds_the_events_lock_sets_the_event() -> None:
    # os.kill runs the handler before it returns, while the lock is held: as when SIGTERM lands inside Event.wait.
    done = _run("""
        import os, signal
        from infrastructure.signals import stop_on_signals
        with stop_on_signals() as stop:
            with stop._cond:
                os.kill(os.getpid(), signal.SIGTERM)
                held = stop.is_set()
            print("set while held:", held, "then:", stop.wait(10))
        print("handler restored:", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["set while held: False then: True", "handler restored: True"]


def test_each_signal_named_sets_the_event_and_others_keep_their_handlers() -> None:
    done = _run("""
        import os, signal
        from infrastructure.signals import stop_on_signals
        with stop_on_signals(signal.SIGUSR1) as stop:
            print("SIGTERM untouched:", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR1)
            print("set:", stop.wait(10))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["SIGTERM untouched: True", "set: True"]


def test_leaving_without_a_signal_leaves_the_event_unset() -> None:
    done = _run("""
        import threading
        from infrastructure.signals import stop_on_signals
        with stop_on_signals() as stop:
            pass
        print(stop.is_set(), [t.name for t in threading.enumerate() if t.name == "signal-relay"])
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False []"
