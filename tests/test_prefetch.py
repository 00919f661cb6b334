"""The read-ahead worker (runtime._prefetch): tickets, release before the memory goes, fork."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from runtime import _prefetch


def test_one_job_at_a_time_and_release_frees_the_slot():
    a = np.ones(1 << 20, np.float32)
    ticket = _prefetch.submit(a, a[:10])
    assert ticket > 0
    assert _prefetch.submit(a) == 0  # declined while a job is out
    _prefetch.release(ticket)
    _prefetch.release(ticket)  # a second release changes nothing
    again = _prefetch.submit(a)
    assert again > ticket
    _prefetch.release(again)
    _prefetch.release(0)


def test_nothing_to_read_gives_no_ticket():
    assert _prefetch.submit() == 0
    ticket = _prefetch.submit(np.ones(4, np.uint8))  # the slot is still free
    assert ticket > 0
    _prefetch.release(ticket)


def test_bad_arrays_are_refused():
    a = np.ones((64, 64), np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        _prefetch.submit(a[:, ::2])
    with pytest.raises(TypeError):
        _prefetch.submit(memoryview(b"abc"))
    with pytest.raises(ValueError, match="at most 8"):
        _prefetch.submit(*[a] * 9)
    ticket = _prefetch.submit(a)  # a refused call leaves no job out
    assert ticket > 0
    _prefetch.release(ticket)


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=os.getcwd())


def test_memory_can_be_unmapped_as_soon_as_release_returns():
    # If the worker read on after release, it would touch unmapped pages and kill the process.
    proc = _run_python("""
        import mmap
        import numpy as np
        from runtime import _prefetch
        for i in range(60):
            size = (64 << 20) if i % 2 else (4 << 10)
            region = mmap.mmap(-1, size)
            array = np.frombuffer(region, np.uint8)
            ticket = _prefetch.submit(array)
            assert ticket > 0
            _prefetch.release(ticket)
            del array
            region.close()
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_worker_of_its_own():
    proc = _run_python("""
        import os
        import numpy as np
        from runtime import _prefetch
        a = np.ones(1 << 22, np.uint8)
        outstanding = _prefetch.submit(a)  # still out when the process forks
        assert outstanding > 0
        pid = os.fork()
        if pid == 0:
            ok = True
            for _ in range(20):
                ticket = _prefetch.submit(a)
                ok = ok and ticket > 0
                _prefetch.release(ticket)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        _prefetch.release(outstanding)
        print(os.waitstatus_to_exitcode(status))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"
