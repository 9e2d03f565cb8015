"""One index, many Python threads: the same results as one thread, and the GIL is released."""

import os
import sys
import threading
import time
import warnings
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


def test_a_pool_of_many_threads_is_not_kept(work, queries):
    # Kept pools hold a few threads per core at most: eight calls with threads=1000..1007 on
    # two cores kept 8,000 threads. A pool past that serves its call and its threads then end.
    def threads_now():
        status = open("/proc/self/status").read()
        return int(next(l.split()[1] for l in status.splitlines() if l.startswith("Threads:")))

    index = bsa.Index.open(work / "idx")
    want = index.search(queries[:5], 3)
    before = threads_now()
    many = min(1000, 4 * (os.cpu_count() or 1) + 100)  # past the kept pools' budget
    for t in (many, many + 1):
        np.testing.assert_array_equal(index.search(queries[:5], 3, threads=t)[1], want[1])
    deadline = time.monotonic() + 20
    while threads_now() > before + 64 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threads_now() <= before + 64, (before, threads_now())


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


def _interrupted_after(seconds, call):
    """Runs ``call`` with a Ctrl-C (``KeyboardInterrupt``) sent after ``seconds``; returns how
    long it took to raise."""
    import _thread

    timer = threading.Timer(seconds, _thread.interrupt_main)
    started = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        timer.cancel()
    return time.perf_counter() - started


def test_ctrl_c_stops_building_and_leaves_the_old_index(tmp_path):
    # A graph on 30,000 random 256-bit codes (hnsw_rs): tens of seconds whole, stopped after
    # one. Nothing is left beside the index the build would have replaced, which is unchanged.
    codes = np.random.default_rng(5).integers(0, 256, (30_000, 32), dtype=np.uint8)
    path = tmp_path / "idx"
    bsa.Index.build(codes=codes[:3], path=path)
    took = _interrupted_after(
        1.0, lambda: bsa.Index.build(codes=codes, hnsw=True, path=path, overwrite=True)
    )
    assert took < 20, f"the build stopped {took:.1f}s after it started"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    assert len(bsa.Index.open(path)) == 3


def test_ctrl_c_stops_encoding_a_large_batch(base):
    # A pursuit model of 4096 bits encodes 200,000 rows in tens of seconds.
    model = bsa.train(base[:2000], method="pursuit", bits=4096, k=32, rounds=1, progress=False)
    x = np.tile(base, (200_000 // len(base) + 1, 1))[:200_000]
    took = _interrupted_after(1.0, lambda: model.encode(x))
    assert took < 20, f"the encoding stopped {took:.1f}s after it started"
    assert model.encode(x[:5]).shape == (5, 512)


def test_ctrl_c_stops_decoding_and_evaluating_a_large_batch(base):
    # Decoding 120,000 random 4096-bit codes (about 2048 atoms summed a row) and evaluating a
    # pursuit model of 4096 bits on 200,000 rows take over ten seconds each here; both ran to
    # the end before Ctrl-C was raised. The model works normally afterwards.
    model = bsa.train(base[:2000], method="pursuit", bits=4096, k=32, rounds=1, progress=False)
    codes = np.random.default_rng(11).integers(0, 256, (120_000, 512), dtype=np.uint8)
    took = _interrupted_after(1.0, lambda: model.decode(codes))
    assert took < 5, f"the decoding stopped {took:.1f}s after it started"
    x = np.tile(base, (200_000 // len(base) + 1, 1))[:200_000]
    took = _interrupted_after(1.0, lambda: model.eval(x))
    assert took < 8, f"the evaluation stopped {took:.1f}s after it started"
    assert model.decode(codes[:3]).shape == (3, base.shape[1])
    assert model.eval(base[:50])["n"] == 50


def test_large_batches_give_the_hits_of_their_pieces(work, queries):
    # A long search (here 7,000 queries by 10,000 codes) runs in batches of queries, so that
    # Ctrl-C can stop it (about a tenth of a second each: one batch for a Hamming scan here,
    # three for the other scores): its hits are those of the same queries searched in shorter
    # calls.
    index = bsa.Index.open(work / "idx")
    many = np.concatenate([queries, queries[::-1]] * 17 + [queries])
    settings = [
        dict(),
        dict(score="adc"),
        dict(score="adc", rescore=4),
        dict(mode="inverted", score="soft"),
        dict(mode="hnsw", ef=32),
        dict(score="cosine", min_score=0.3),
        dict(max_distance=20),
    ]
    for s in settings:
        D, I = index.search(many, 10, **s)
        for start in range(0, len(many), 1500):
            d, i = index.search(many[start : start + 1500], 10, **s)
            np.testing.assert_array_equal(I[start : start + 1500], i, err_msg=str(s))
            np.testing.assert_array_equal(D[start : start + 1500], d, err_msg=str(s))


def test_ctrl_c_stops_a_large_search(tmp_path):
    # 100,000 queries against 400,000 random 512-bit codes by Hamming distance: tens of
    # seconds whole, stopped after half a second.
    rng = np.random.default_rng(9)
    index = bsa.Index.build(codes=rng.integers(0, 256, (400_000, 64), dtype=np.uint8), inverted=False)
    q = rng.integers(0, 256, (100_000, 64), dtype=np.uint8)
    took = _interrupted_after(0.5, lambda: index.search(q, 10))
    assert took < 10, f"the search stopped {took:.1f}s after it started"
    D, I = index.search(q[:3], 10)
    assert I.shape == (3, 10)


def test_ctrl_c_stops_adding(tmp_path):
    # Adding 30,000 random 256-bit codes to an index with a graph on its codes builds the new
    # segment's graph for tens of seconds; stopped after one, before the commit: the index is
    # as it was, with nothing left of the change (compactions stop the same way).
    rng = np.random.default_rng(6)
    path = tmp_path / "idx"
    index = bsa.Index.build(codes=rng.integers(0, 256, (500, 32), dtype=np.uint8), hnsw=True, path=path)
    index.add(codes=rng.integers(0, 256, (20, 32), dtype=np.uint8), merge_factor=0)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    more = rng.integers(0, 256, (30_000, 32), dtype=np.uint8)
    took = _interrupted_after(1.0, lambda: index.add(codes=more, merge_factor=0))
    assert took < 20, f"the add stopped {took:.1f}s after it started"
    assert (len(index), index.segments) == (520, 2)
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*")) == files
    bsa.Index.open(path).verify()
    index.add(codes=more[:5], merge_factor=0)
    assert (len(index), index.segments) == (525, 3)


def test_a_keyboard_interrupt_from_a_change_means_it_was_not_made(tmp_path):
    # Ctrl-C at random moments of adds (a few tenths of a second: a graph for each new segment)
    # and deletes (milliseconds); a stress review found 11 of 40 adds raising KeyboardInterrupt
    # with their rows committed, so a retry would add them twice. The call either raises with
    # the index as it was, or returns with the change made, warning when a Ctrl-C came too late
    # to stop it. (A Ctrl-C in the few bytecodes after a call has returned is Python's, raised
    # outside the call: rare enough here not to count.)
    import _thread

    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    index = bsa.Index.build(codes=codes[:1000], hnsw=True, path=tmp_path / "idx")
    started = time.perf_counter()
    index.add(codes=codes, merge_factor=0)
    took = time.perf_counter() - started
    outcomes = set()
    for i in range(24):
        before = len(bsa.Index.open(tmp_path / "idx"))
        delete = i % 3 == 2
        timer = threading.Timer(float(rng.uniform(0.1, 1.3)) * took, _thread.interrupt_main)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            timer.start()
            try:
                if delete:
                    index.delete(index.ids[:50])
                else:
                    index.add(codes=codes, merge_factor=0)
                raised = False
            except KeyboardInterrupt:
                raised = True
            finally:
                timer.cancel()
            try:
                time.sleep(0.01)  # a Ctrl-C that came after the call
            except KeyboardInterrupt:
                pass
        late = [w for w in caught if "came once the change" in str(w.message)]
        changed = len(bsa.Index.open(tmp_path / "idx")) != before
        assert changed != raised, f"round {i}: raised={raised}, changed={changed}"
        assert not late or changed
        outcomes.add((raised, bool(late)))
    # Some stopped, some done before their Ctrl-C (and, by chance, some warned of).
    assert {(True, False), (False, False)} <= outcomes, outcomes


def test_ctrl_c_stops_a_ground_truth(base):
    # 200,000 rows by 20,000 queries: minutes whole, stopped after one second.
    big = np.tile(base, (20, 1))
    took = _interrupted_after(1.0, lambda: bsa.groundtruth(big, big[:20_000], 10))
    assert took < 20, f"the ground truth stopped {took:.1f}s after it started"
