"""A process forked after bsa has run (os.fork, multiprocessing's "fork" start method, the
default on Linux before Python 3.14) can use bsa: the child inherits the parent's thread pools
without their threads, and used to wait forever in its first call (a review's finding)."""

import multiprocessing
import os
import signal
import sys
import time
import traceback

import numpy as np
import pytest

import bsa

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform"),
    # Python 3.12+ warns that forking a process with threads may deadlock: what this tests.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def every_call(base, queries, idx, tmp, tag):
    """Runs each kind of call on bsa's pools (all cores, and 2 and 1 threads); returns the
    results that must not depend on the process."""
    x = base[:2000]
    sign = bsa.train(x, method="sign", progress=False)
    topk = bsa.train(x, method="topk", bits=128, k=8, epochs=1, progress=False, threads=2)
    codes = topk.encode(x, threads=1)
    topk.decode(codes[:10])
    index = bsa.Index.open(idx)
    index.verify()
    out = [codes, sign.encode(queries)]
    for threads in (None, 2, 1):
        for mode in ("flat", "inverted", "hnsw"):
            out += index.search(queries, 10, mode=mode, threads=threads)
        out += index.search(queries, 10, score="adc", rescore=4, threads=threads)
    out.append(bsa.groundtruth(x, queries, 10))
    built = bsa.Index.build(x=x, model=topk, vectors=True, path=str(tmp / f"built-{tag}"))
    built.add(x=base[2000:2100], ids=np.arange(10_000, 10_100))
    built.delete(np.arange(10_000, 10_050))
    built.compact()
    out += built.search(queries, 5)
    return out


def test_a_forked_child_uses_bsa_after_its_parent(base, queries, work, tmp_path):
    want = every_call(base, queries, work / "idx", tmp_path, "parent")
    pid = os.fork()
    if pid == 0:
        # The child: a hang ends by the alarm (killed by SIGALRM), a failure by exit code 3.
        code = 3
        try:
            signal.alarm(120)
            got = every_call(base, queries, work / "idx", tmp_path, "child")
            same = len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want))
            code = 0 if same else 4
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + 180
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish in 180 s (killed)")
        time.sleep(0.05)
    if os.WIFSIGNALED(status):
        pytest.fail(f"the forked child was killed by signal {os.WTERMSIG(status)} (a hang ends by SIGALRM)")
    assert os.WEXITSTATUS(status) != 4, "the forked child got other results than its parent"
    assert os.WEXITSTATUS(status) == 0, "the forked child failed (its traceback is above)"


def search_in_worker(args):
    index, queries, threads = args
    return index.search(queries, 10, threads=threads)


def test_a_fork_pool_searches_an_index_its_parent_searched(work, queries):
    index = bsa.Index.open(work / "idx")
    want = [index.search(queries, 10, threads=t) for t in (None, 1)]
    jobs = [(index, queries, t) for t in (None, 1)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map_async(search_in_worker, jobs).get(timeout=120)
    for (D, I), (Dw, Iw) in zip(got, want):
        np.testing.assert_array_equal(I, Iw)
        np.testing.assert_array_equal(D, Dw)
