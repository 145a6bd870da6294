"""unix/linux.py's fork without CPython's at-fork work, and its one-thread guard."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> subprocess.CompletedProcess[str]:
    """In a fresh interpreter: pytest's own threads must not be in the picture."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_fork_bare_makes_a_child_and_skips_the_at_fork_callbacks() -> None:
    out = run(
        """
        import os
        from svcengine.unix import linux
        os.register_at_fork(after_in_child=lambda: os.write(1, b"callback\\n"))
        r, w = os.pipe()
        pid = linux.fork_bare()
        if pid == 0:
            os.write(w, b"%d" % os.getpid())
            os._exit(7)
        os.close(w)
        said = int(os.read(r, 32))
        _, status = os.waitpid(pid, 0)
        print(said == pid, os.waitstatus_to_exitcode(status))
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "True 7\n"  # no "callback": the child ran none of them


def test_single_threaded_counts_threads_the_threading_module_never_saw() -> None:
    out = run(
        """
        import _thread, threading, time
        from svcengine.unix import linux
        before = linux.single_threaded()
        _thread.start_new_thread(time.sleep, (30,))
        print(before, linux.single_threaded(), threading.active_count())
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "True False 1\n"
