"""One index, many Python threads: the same results as one thread, and the GIL is released."""

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import bsa


def test_four_threads_give_the_same_results(work, queries):
    index = bsa.Index.open(work / "idx")
    batches = [queries[i::4] for i in range(4)]
    settings = [dict(), dict(score="adc", rescore=4), dict(mode="inverted", score="soft"), dict(mode="hnsw")]
    for s in settings:
        one = [index.search(b, 10, **s) for b in batches]
        for threads in (1, None):
            with ThreadPoolExecutor(4) as pool:
                got = list(pool.map(lambda b: index.search(b, 10, threads=threads, **s), batches))
            for (D, I), (D1, I1) in zip(got, one):
                np.testing.assert_array_equal(I, I1)
                np.testing.assert_array_equal(D, D1)


def test_every_thread_count_gives_the_same_results(work, queries):
    # Pools are kept per size (eight at most): more sizes than that, in turn and at once from
    # several Python threads, replace kept pools while others use them.
    index = bsa.Index.open(work / "idx")
    want = index.search(queries, 10, score="adc")
    sizes = list(range(1, 12)) * 2
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda t: index.search(queries, 10, score="adc", threads=t), sizes))
    for D, I in got:
        np.testing.assert_array_equal(I, want[1])
        np.testing.assert_array_equal(D, want[0])


@pytest.fixture
def long_switch_interval():
    """No forced GIL hand-over for a second: another thread runs only when the running one
    releases the GIL itself (as a search does), so the timings below cannot happen by chance."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    yield
    sys.setswitchinterval(old)


def ran_during(call):
    """Runs `call` in a thread and, meanwhile, Python code in this one; returns the number of
    this thread's timestamps that fall inside the call."""
    span, stamps = {}, []
    started, done = threading.Event(), threading.Event()

    def worker():
        span["start"] = time.perf_counter()
        started.set()
        call()
        span["end"] = time.perf_counter()
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    started.wait()
    while not done.is_set():
        stamps.append(time.perf_counter())
        done.wait(0.001)
    t.join()
    return sum(span["start"] < s < span["end"] for s in stamps), span["end"] - span["start"]


def test_search_releases_the_gil(work, queries, long_switch_interval):
    index = bsa.Index.open(work / "idx")
    big = np.tile(queries, (20, 1))  # 4000 queries
    inside, seconds = ran_during(lambda: index.search(big, 10, score="soft", threads=1))
    assert inside >= 3, f"only {inside} steps of another thread during a {seconds:.3f}s search"


def test_training_and_building_release_the_gil(base, long_switch_interval):
    inside, seconds = ran_during(lambda: bsa.train(base, method="itq", bits=64, progress=False))
    assert inside >= 3, f"only {inside} steps of another thread during {seconds:.3f}s of training"
    model = bsa.train(base, method="itq", bits=64, progress=False)
    inside, seconds = ran_during(lambda: bsa.Index.build(x=base, model=model, vectors=True, hnsw=True))
    assert inside >= 3, f"only {inside} steps of another thread during {seconds:.3f}s of building"


@pytest.mark.parametrize("kind", ["bsa", "pursuit", "itq"])
def test_ctrl_c_stops_training(base, kind):
    # Ctrl-C during a fit raises KeyboardInterrupt soon (the fit polls a stop flag), not when
    # the fit ends: these fits would run for over a minute (then the interrupt was raised only
    # after it, too late for the assertion). The next fit runs normally.
    import _thread

    settings = {
        "bsa": dict(bits=1024, k=32, epochs=100),
        "pursuit": dict(method="pursuit", bits=2048, k=32, rounds=100),
        "itq": dict(method="itq", bits=256, itq_iterations=1000),
    }[kind]
    timer = threading.Timer(1.0, _thread.interrupt_main)
    started = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            bsa.train(base, progress=False, threads=1 if kind == "bsa" else None, **settings)
    finally:
        timer.cancel()
    assert time.perf_counter() - started < 60
    model = bsa.train(base[:500], bits=64, k=4, epochs=1, progress=False)
    assert model.bits == 64
