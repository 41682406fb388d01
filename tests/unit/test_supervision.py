"""``infrastructure.supervision``: a parent stops on SIGTERM (0) or when a child exits (1), and takes every child
down with it; a child whose parent is gone stops itself. Each case runs in a child interpreter with a deadline."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str) -> list[str]:
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True,
                              text=True, timeout=40, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the process hung: {exc}") from None
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_sigterm_ends_the_parent_with_status_0_and_stops_its_children() -> None:
    assert _run("""
        import multiprocessing, os, signal, threading, time
        from infrastructure.supervision import supervise

        if __name__ == "__main__":
            child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,), name="sleeper")
            threading.Timer(1.0, os.kill, args=(os.getpid(), signal.SIGTERM)).start()
            print(supervise([child]), child.exitcode)
    """) == ["0", "-15"]


def test_a_child_that_exits_ends_the_parent_with_status_1_and_stops_the_others() -> None:
    assert _run("""
        import multiprocessing, sys, time
        from infrastructure.supervision import supervise

        if __name__ == "__main__":
            spawn = multiprocessing.get_context("spawn")
            gone = spawn.Process(target=sys.exit, args=(3,), name="gone")
            sleeper = spawn.Process(target=time.sleep, args=(60,), name="sleeper")
            print(supervise([gone, sleeper]), gone.exitcode, sleeper.exitcode)
    """) == ["1", "3", "-15"]


def test_a_child_that_ignores_sigterm_is_killed_once_the_wait_is_over() -> None:
    assert _run("""
        import multiprocessing
        from infrastructure.supervision import stop_all

        STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); ready.set(); time.sleep(60)"

        if __name__ == "__main__":
            spawn = multiprocessing.get_context("spawn")
            ready = spawn.Event()
            child = spawn.Process(target=exec, args=(STUBBORN, {"ready": ready}))
            child.start()
            assert ready.wait(30)  # its SIGTERM is ignored from here on
            stop_all([child], wait=0.5)
            print(child.exitcode)
    """) == ["-9"]


def test_a_child_stops_itself_once_its_parent_is_gone() -> None:
    # The middle process starts a watched grandchild, reports its pid and dies with SIGKILL (no chance to stop it).
    pid = _run("""
        import os, subprocess, sys, time
        middle = subprocess.Popen([sys.executable, "-c", '''
        import os, signal, subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import os, time\\\\n"
            "from infrastructure.supervision import watch_parent\\\\n"
            f"watch_parent({os.getpid()})\\\\n"
            "time.sleep(60)"])
        print(grandchild.pid, flush=True)
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)
        '''], stdout=subprocess.PIPE, text=True)
        print(middle.stdout.readline().strip(), flush=True)
        middle.wait()
    """)[0]
    deadline_script = f"""
        import time
        for _ in range(100):
            try:  # gone, or a zombie its new parent has not reaped yet
                with open("/proc/{pid}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                        raise FileNotFoundError
            except FileNotFoundError:
                print("gone")
                break
            time.sleep(0.1)
        else:
            import os
            os.kill({pid}, 9)
            print("still running")
    """
    assert _run(deadline_script) == ["gone"]


def test_a_crash_stays_a_failure_when_a_signal_comes_while_the_others_stop() -> None:
    # A process manager often sends SIGTERM once it sees the parent stopping: the status must still say "crashed".
    # Here the other child passes its own SIGTERM (from the parent stopping it) on to the parent, and holds on.
    assert _run("""
        import multiprocessing, os
        import infrastructure.supervision as supervision

        RELAYING = ("import os, signal, time\\n"
                    "signal.signal(signal.SIGTERM, lambda *_: os.kill(parent, signal.SIGTERM))\\n"
                    "ready.set()\\n"
                    "time.sleep(60)")

        if __name__ == "__main__":
            supervision.STOP_WAIT = 3.0
            spawn = multiprocessing.get_context("spawn")
            ready = spawn.Event()
            relaying = spawn.Process(target=exec, args=(RELAYING, {"ready": ready, "parent": os.getpid()}))
            crashing = spawn.Process(target=exec, args=("ready.wait(30); raise SystemExit(3)", {"ready": ready}))
            print(supervision.supervise([relaying, crashing]), crashing.exitcode, relaying.exitcode)
    """) == ["1", "3", "-9"]
