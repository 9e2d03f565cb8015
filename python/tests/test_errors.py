"""Bad inputs raise clear Python exceptions naming the argument; nothing crashes."""

import sys
import warnings

import numpy as np
import pytest

import bsa


@pytest.fixture(scope="module")
def index(work):
    return bsa.Index.open(work / "idx")


@pytest.fixture(scope="module")
def model(work):
    return bsa.Model.load(work / "model.safetensors")


def test_wrong_dtype(index, model, queries):
    with pytest.raises(TypeError, match=r"\bq\b.*dtype int32"):
        index.search(queries.astype(np.int32), 5)
    with pytest.raises(TypeError, match=r"\bx\b.*dtype"):
        model.encode(np.zeros((3, 384), dtype=np.int64))
    with pytest.raises(TypeError, match="packbits"):
        bsa.Index.build(codes=np.zeros((3, 8), dtype=bool))
    with pytest.raises(TypeError, match="codes.*uint8"):
        model.decode(np.zeros((3, 64), dtype=np.int16))
    with pytest.raises(TypeError, match="q must be float vectors.*dtype object"):
        index.search(object(), 5)
    # None is named as such, not as numpy's 0-d object array of it.
    with pytest.raises(TypeError, match="x must be a numpy array, got None$"):
        model.encode(None)
    with pytest.raises(TypeError, match="q must be a numpy array, got None$"):
        index.search(None, 5)


def test_other_float_types_and_layouts_are_converted(index, queries):
    D, I = index.search(queries, 5)
    for q in (np.asfortranarray(queries), queries.astype(">f4"), queries.astype(np.float64),
              queries.tolist(), np.repeat(queries, 2, axis=0)[::2]):
        D2, I2 = index.search(q, 5)
        np.testing.assert_array_equal(I2, I)
        np.testing.assert_array_equal(D2, D)


def test_one_dimensional_and_empty(index, model, queries):
    with pytest.raises(ValueError, match=r"q must be a 2-D array.*\(384,\).*reshape\(1, -1\)"):
        index.search(queries[0], 5)
    with pytest.raises(ValueError, match="x must be a 2-D array"):
        model.encode(queries[0])
    # No columns, or no rows to fit or build from (an empty batch of queries is answered).
    with pytest.raises(ValueError, match=r"q is empty \(shape \(200, 0\)\)"):
        index.search(queries[:, :0], 5)
    with pytest.raises(ValueError, match="x is empty"):
        bsa.train(queries[:0], method="sign", progress=False)
    # One row, for the baselines too (ITQ fitted a decoder mapping every code to it).
    for method in ["sign", "lsh", "itq"]:
        with pytest.raises(ValueError, match="at least 2 training rows, got 1"):
            bsa.train(queries[:1], method=method, bits=64 if method != "sign" else None, progress=False)
    with pytest.raises(ValueError, match="codes is empty"):
        bsa.Index.build(codes=np.zeros((0, 4), np.uint8))


def test_training_errors_name_keywords_not_flags(queries):
    # The library's checks name `bsa train`'s flags; from Python they name the keywords given.
    cases = [
        (dict(bits=64, k=4, lr=-1.0), r"^lr must be a positive number, got -1\.0$"),
        (dict(bits=64, k=4, val_fraction=0.7), r"^val_fraction must be in \[0, 0\.5\)"),
        (dict(method="sign", bits=5), r"method sign makes one bit .* so bits must be 384"),
        (dict(bits=64, k=64), r"^k 64 sets every one of the 64 bits"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            bsa.train(queries, progress=False, **kw)
        assert "--" not in str(e.value), kw
    # A fit that finishes but learns nothing warns, as `bsa train` does, naming the keyword.
    with pytest.warns(UserWarning, match=r"^lr 1e30 is above 1: Adam moves every weight by about lr") as w:
        bsa.train(queries, bits=64, k=4, epochs=2, lr=1e30, progress=False)
    with pytest.warns(UserWarning, match=r"^the training loss did not fall over 2 epochs .* check lr \(now 1e-30\)"):
        model = bsa.train(queries, bits=64, k=4, epochs=2, lr=1e-30, progress=False)
    assert "warnings" not in model.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bsa.train(queries, bits=64, k=4, epochs=3, batch=32, lr=0.01, progress=False)
    with pytest.raises(ValueError, match="ids must be 1-D|ids.*1-D"):
        bsa.Index.build(codes=np.zeros((2, 1), np.uint8), ids=np.zeros((2, 1), np.int64))


def test_nan(index, model, queries):
    q = queries[:4].copy()
    q[2, 7] = np.nan
    # Each error names the argument the caller passed (the library's labels were "queries",
    # "data" and "new rows").
    with pytest.raises(ValueError, match="^q: row 2: column 7 is NaN"):
        index.search(q, 5)
    with pytest.raises(ValueError, match="^x: row 2: column 7 is NaN"):
        bsa.Index.build(x=q, model=model)
    with pytest.raises(ValueError, match="^x: row 2: column 7 is NaN"):
        bsa.Index.build(x=queries[:8], model=model).add(q)
    with pytest.raises(ValueError, match="row 2: column 7"):
        model.encode(q)
    with pytest.raises(ValueError, match="row 2"):
        bsa.train(q, method="sign", progress=False)
    with pytest.raises(ValueError, match="row 2"):
        bsa.groundtruth(q, queries[:2], 1)


def test_float64_beyond_float32_is_named_as_such(index, model, queries):
    # numpy's conversion would make 1e300 inf (with a warning) for bsa to call "+infinity",
    # and a row of 1e-50s all zeros: neither is what the array holds.
    q = queries[:4].astype(np.float64)
    q[2, 7] = 1e300
    with pytest.raises(ValueError, match="row 2, column 7 is 1e300, beyond the range of float32"):
        index.search(q, 5)
    # Whatever the byte order, and from longdouble too (numpy's cast warned and made it inf).
    for wide in [q.astype(">f8"), q.astype(np.longdouble)]:
        with pytest.raises(ValueError, match="row 2, column 7 is 1e300, beyond the range"):
            index.search(wide, 5)
    q = queries[:4].astype(np.float64)
    q[1] = 1e-50
    with pytest.raises(ValueError, match="row 1's values are all below float32's smallest"):
        model.encode(q)
    # Values that only round (or underflow beside others) are converted as before.
    q = queries[:4].astype(np.float64)
    q[0, 0] = 1e-50
    np.testing.assert_array_equal(model.encode(q)[1:], model.encode(queries[1:4]))


def test_training_refuses_rows_float32_cannot_square(queries, model):
    # Training computes in float32: such a row gave a model that codes every row alike.
    # Evaluation computes so too: it said such rows were at cosine distance 1.
    for scale in [1e20, 1e-20]:
        x = queries[:50].copy()
        x[7] *= scale
        with pytest.raises(ValueError, match="x: row 7: L2 norm .* L2-normalised"):
            model.eval(x)
        for kw in [dict(bits=16, k=4, epochs=1), dict(method="itq", bits=4), dict(preset="retrieval", bits=16, k=2)]:
            with pytest.raises(ValueError, match="x: row 7: L2 norm .* L2-normalised"):
                bsa.train(x, **kw)


def test_a_model_of_one_code_is_warned_of(queries):
    x = queries * np.float32(1e-3)  # rows of norm 0.001: one code for all of them
    with pytest.warns(UserWarning, match=f"the model gives all {len(x)} rows of x one code"):
        bsa.train(x, bits=64, k=8, epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bsa.train(queries, bits=64, k=8, epochs=2)


def test_zero_query_is_refused(index, queries):
    # No direction: every ADC score would be 0 and the hits the lowest ids. Hamming searches
    # its code.
    q = queries[:3].copy()
    q[1] = 0
    for score in ["adc", "soft"]:
        with pytest.raises(ValueError, match="row 1: L2 norm is 0"):
            index.search(q, 5, score=score)
    index.search(q, 5)


def test_wrong_dimension(index, model, queries):
    # The words every command gives rows of the wrong width to a model with.
    want = (
        "dimension mismatch: the columns of the queries against the model's input dimension "
        "(embed with the same encoder the model was trained on, or train a model for this "
        "dimension): expected 384, got 100"
    )
    with pytest.raises(ValueError) as e:
        index.search(queries[:, :100], 5)
    assert str(e.value) == want
    with pytest.raises(ValueError, match="columns.*384"):
        model.encode(queries[:, :100])
    with pytest.raises(ValueError, match="bytes per query code"):
        index.search(np.zeros((2, 10), np.uint8), 5)
    with pytest.raises(ValueError, match="columns"):
        bsa.groundtruth(queries, queries[:, :10], 1)


@pytest.mark.parametrize("k", [0, -3])
def test_k_not_positive(index, queries, k):
    with pytest.raises(ValueError, match=f"k must be a positive integer, got {k}"):
        index.search(queries, k)
    with pytest.raises(ValueError, match="k must be"):
        bsa.groundtruth(queries, queries, k)
    with pytest.raises(ValueError, match="k must be"):
        bsa.recall(np.zeros((1, 1), int), np.zeros((1, 1), int), k)


def test_k_too_large_for_memory(index, queries):
    # Refused before the search runs: no abort of the interpreter, no PanicException.
    for k in (10**13, 2**62):
        with pytest.raises(MemoryError, match=f"k = {k}"):
            index.search(queries, k)
    D, I = index.search(queries[:1], 10**4)
    assert I.shape == (1, 10**4) and (I[0, len(index):] == -1).all()


def test_misaligned_floats_are_copied(index, queries):
    buf = np.zeros(queries.size * 4 + 1, np.uint8)
    odd = buf[1:].view(np.float32).reshape(queries.shape)
    odd[:] = queries
    assert not odd.flags.aligned
    D, I = index.search(odd, 5)
    D2, I2 = index.search(queries, 5)
    np.testing.assert_array_equal(I, I2)
    np.testing.assert_array_equal(D, D2)
    raw = np.zeros(8 * 3 + 1, np.uint8)
    odd_ids = raw[1:].view(np.int64)
    odd_ids[:] = I[0, :3]
    assert not odd_ids.flags.aligned
    _, I3 = index.search(queries, 5, deny_ids=odd_ids)
    assert not np.isin(I3, I[0, :3]).any()


def test_id_lists_empty_or_out_of_range(index, queries):
    _, everyone = index.search(queries, 5)
    _, I = index.search(queries, 5, deny_ids=[])
    np.testing.assert_array_equal(I, everyone)
    _, I = index.search(queries, 5, allow_ids=[])
    assert (I == -1).all()
    with pytest.raises(ValueError, match=r"ids\[0\] is 9223372036854775808.*below 2\^63"):
        bsa.Index.build(codes=np.zeros((2, 1), np.uint8), ids=np.array([2**63, 1], np.uint64))
    # As a list, numpy makes such ids float64 or object before bsa sees them: said so.
    for big in [2**63, 2**70]:
        with pytest.raises(TypeError, match=r"ids are integers below 2\*\*63"):
            bsa.Index.build(codes=np.zeros((2, 1), np.uint8), ids=[1, big])
    # Floats are said to be floats, and a generator (one object to numpy) not to be read.
    with pytest.raises(TypeError, match="float64 when it holds a float"):
        index.search(queries, 5, allow_ids=[1.0, 2.0])
    with pytest.raises(TypeError, match="allow_ids must be a list, range or array of integers, "
                                        "got a generator"):
        index.search(queries, 5, allow_ids=(i for i in range(100)))
    with pytest.raises(TypeError, match="list of objects when it holds something other"):
        index.search(queries, 5, allow_ids=[1, None])


def test_bad_options(index, work, queries):
    with pytest.raises(ValueError, match="score.*unknown score \"dot\""):
        index.search(queries, 5, score="dot")
    with pytest.raises(ValueError, match="mode.*unknown search mode"):
        index.search(queries, 5, mode="ivf")
    with pytest.raises(ValueError, match="ranks by Hamming distance only"):
        index.search(queries, 5, mode="hnsw", score="adc")
    with pytest.raises(ValueError, match="score adc needs float queries"):
        index.search(np.load(work / "qcodes.npy"), 5, score="adc")
    with pytest.raises(ValueError, match="rescoring needs float queries"):
        index.search(np.load(work / "qcodes.npy"), 5, rescore=2)
    with pytest.raises(ValueError, match="rescore must be a positive integer"):
        index.search(queries, 5, rescore=0)
    codes_only = bsa.Index.build(codes=np.load(work / "qcodes.npy"))
    with pytest.raises(ValueError, match="no model to encode float queries"):
        codes_only.search(queries, 5)
    with pytest.raises(ValueError, match="stores no vectors"):
        bsa.Index.build(x=queries, model=bsa.Index.open(work / "idx").model).search(queries, 5, rescore=2)
    with pytest.raises(ValueError, match="give preset or method"):
        bsa.train(queries, preset="retrieval", method="itq")
    with pytest.raises(ValueError, match="method"):
        bsa.train(queries, method="pca", progress=False)
    with pytest.raises(ValueError, match="needs bits and k"):
        bsa.train(queries, progress=False)
    with pytest.raises(ValueError, match="give codes"):
        bsa.Index.build()
    model = bsa.Index.open(work / "idx").model
    with pytest.raises(ValueError, match="bits is the model's code length"):
        bsa.Index.build(x=queries, model=model, bits=64)
    with pytest.raises(ValueError, match="hnsw_on.*needs hnsw=True"):
        bsa.Index.build(x=queries, model=model, hnsw_on="data")
    for kw in [dict(m=0), dict(ef_construction=-5), dict(ef_search=16)]:
        with pytest.raises(ValueError, match=f"{next(iter(kw))} is a setting of the graph"):
            bsa.Index.build(x=queries, model=model, **kw)
    with pytest.raises(ValueError, match="ids.*non-negative"):
        bsa.Index.build(codes=np.zeros((2, 1), np.uint8), ids=np.array([1, -1]))
    with pytest.raises(ValueError, match="2 ids for 3 codes"):
        bsa.Index.build(codes=np.zeros((3, 1), np.uint8), ids=np.array([1, 2]))
    # Options that would be ignored, or store what no search can use.
    with pytest.raises(ValueError, match="f16 is how stored vectors are kept"):
        bsa.Index.build(x=queries, model=model, f16=True)
    codes = model.encode(queries)
    for kw in [dict(), dict(vectors=True)]:
        with pytest.raises(ValueError, match="an index of codes alone has no use for it"):
            bsa.Index.build(codes=codes, x=queries, **kw)


def test_a_bool_is_not_an_integer_argument(model, queries):
    # Python counts True as 1: search(q, True) searched for the top 1, threads=True ran on one
    # thread. Every integer argument refuses a bool (TypeError naming it); numpy integers and
    # ints are taken as before, and the signatures still show the defaults.
    codes = model.encode(queries)
    index = bsa.Index.build(codes=codes)
    calls = {
        "k": lambda: index.search(codes, True),
        "ef": lambda: index.search(codes, 5, mode="hnsw", ef=True),
        "threads": lambda: model.encode(queries, threads=False),
        "seed": lambda: bsa.train(queries, method="sign", seed=True, progress=False),
        "merge_factor": lambda: index.add(codes=model.encode(queries[:2]), merge_factor=True),
        "max_segments": lambda: index.compact(True),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match="an integer is required, got a bool") as e:
            call()
        if sys.version_info >= (3, 11):  # pyo3 names the argument in a note
            assert f"'{name}'" in " ".join(getattr(e.value, "__notes__", [])), name
    assert index.search(codes, np.int64(3))[1].shape == (len(queries), 3)
    assert len(index) == len(queries)
    assert "k=10," in bsa.Index.search.__text_signature__
    assert "seed=0," in bsa.train.__text_signature__
    assert "merge_factor=2," in bsa.Index.add.__text_signature__
    assert "(base, queries, k=100," in bsa.groundtruth.__text_signature__


def test_numeric_options_are_named(model, queries):
    # ValueError naming the argument, as search does (OverflowError without a name before).
    index = bsa.Index.build(codes=model.encode(queries))
    for kw in [dict(k=2**64), dict(k=2**70), dict(rescore=2**64), dict(ef=2**65)]:
        name = next(iter(kw))
        with pytest.raises(ValueError, match=f"{name} is {kw[name]}, past any size"):
            index.search(queries, **kw)
    # An ef the mode would ignore is refused, as `bsa search --ef` without `--mode hnsw`.
    for mode in ["flat", "inverted"]:
        with pytest.raises(ValueError, match=f"mode {mode} is exact and takes no ef"):
            index.search(queries, 5, mode=mode, ef=50)
    with pytest.raises(ValueError, match="^mode: "):  # a misspelt mode is said as that
        index.search(queries, 5, mode="hsnw", ef=50)
    with pytest.raises(MemoryError, match="do not fit in memory"):
        index.search(queries, 2**63)
    with pytest.raises(ValueError, match="max_distance must be between 0 and 2..32 - 1"):
        index.search(queries, 5, max_distance=2**63)
    with pytest.raises(ValueError, match="merge_factor must be 0 or more, got -18446744073709551616"):
        index.add(codes=model.encode(queries[:2]), merge_factor=-2**64)
    with pytest.raises(ValueError, match="merge_factor is 1180591620717411303424, past any size"):
        index.add(codes=model.encode(queries[:2]), merge_factor=2**70)
    with pytest.raises(ValueError, match="min_score is 1e300, beyond float32's range"):
        index.search(queries, 5, score="cosine", min_score=1e300)
    with pytest.raises(ValueError, match="^min_score is NaN: give a number"):
        index.search(queries, 5, score="cosine", min_score=float("nan"))
    with pytest.raises(ValueError, match="k is 36893488147419103232, past any size"):
        bsa.groundtruth(queries, queries, 2**65)
    with pytest.raises(ValueError, match="threads must be a positive integer, got -1"):
        model.encode(queries, threads=-1)
    with pytest.raises(ValueError, match="threads must be a positive integer, got 0"):
        model.eval(queries, threads=0)
    with pytest.raises(ValueError, match=r"seed must be in 0..2\*\*64, got -1"):
        bsa.train(queries, method="sign", seed=-1, progress=False)
    with pytest.raises(ValueError, match="seed must be in"):
        bsa.train(queries, method="sign", seed=2**64, progress=False)
    bsa.train(queries[:50], method="lsh", bits=16, seed=2**64 - 1, progress=False)
    with pytest.raises(ValueError) as e:
        bsa.train(queries, bits=64, k=4, loss="l1", progress=False)
    assert str(e.value).count("invalid argument") <= 1 and "loss: unknown" in str(e.value)


def test_settings_the_method_does_not_use_are_refused(queries):
    x = queries[:200]
    for method, extra in [("itq", dict(epochs=3, lr=0.1)), ("sign", dict(rounds=2)),
                          ("pursuit", dict(itq_iterations=5)), ("bsa", dict(ridge=0.1))]:
        kw = dict(bits=16, k=4) if method in ("pursuit", "bsa") else {}
        with pytest.raises(ValueError, match=f"method {method} does not read {', '.join(extra)}"):
            bsa.train(x, method=method, progress=False, **kw, **extra)
    with pytest.raises(ValueError, match="preset \"retrieval\" does not read epochs"):
        bsa.train(x, "retrieval", bits=16, k=4, epochs=2, progress=False)
    # Every setting passes through the one table of who reads what (an unknown name would be
    # taken as read by all): all of them given to itq, every one it does not read is named.
    every = dict(epochs=1, batch=8, lr=0.1, alpha=1.0, loss="mse", target="khot", val_fraction=0.1,
                 rounds=1, ridge=0.1, fit_rows=10, itq_iterations=2)
    with pytest.raises(ValueError) as e:
        bsa.train(x, method="itq", bits=16, progress=False, **every)
    for name in every:
        assert (name in str(e.value)) == (name not in ("fit_rows", "itq_iterations")), (name, e.value)
    # Settings a method uses are taken, and what is left out is the CLI's default.
    m = bsa.train(x, method="itq", bits=16, fit_rows=100, itq_iterations=3, progress=False)
    assert m.training["settings"]["fit_rows"] == 100 and m.training["settings"]["itq_iterations"] == 3
    m = bsa.train(x, bits=16, k=4, epochs=1, progress=False)
    assert (m.training["settings"]["epochs"], m.training["settings"]["batch"]) == (1, 1024)


def test_corrupt_or_missing_index(work, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-index"):
        bsa.Index.open(tmp_path / "no-such-index")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(NotADirectoryError, match="a-file: not a directory"):
        bsa.Index.open(tmp_path / "a-file")
    # A change to an index whose folder was removed meanwhile: said as the open says it.
    import shutil

    gone = bsa.Index.build(codes=np.zeros((3, 1), np.uint8), path=tmp_path / "gone")
    shutil.rmtree(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="gone: no such index directory"):
        gone.delete(np.array([0]))
    assert not (tmp_path / "gone").exists()
    bsa.Index.open(work / "idx").save(tmp_path / "idx")
    codes = tmp_path / "idx" / "codes.bin"
    data = bytearray(codes.read_bytes())
    data[-1] ^= 0xFF
    codes.write_bytes(bytes(data))
    with pytest.raises(bsa.FormatError, match="codes.bin.*checksum"):
        bsa.Index.open(tmp_path / "idx")
    assert issubclass(bsa.FormatError, ValueError)
    # The stored vectors are verified by the first rescoring, their one reader: a search
    # without it answers as the undamaged index does.
    bsa.Index.open(work / "idx").save(tmp_path / "vec")
    vectors = tmp_path / "vec" / "vectors.bin"
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 0xFF
    vectors.write_bytes(bytes(data))
    q = np.load(work / "query.npy")[:5]
    damaged, good = bsa.Index.open(tmp_path / "vec"), bsa.Index.open(work / "idx")
    for got, want in zip(damaged.search(q, 5, score="adc"), good.search(q, 5, score="adc")):
        np.testing.assert_array_equal(got, want)
    for _ in range(2):
        with pytest.raises(bsa.FormatError, match="vectors.bin.*checksum"):
            damaged.search(q, 5, score="adc", rescore=2)
    (tmp_path / "idx" / "manifest.json").write_text("{not json")
    with pytest.raises(bsa.FormatError, match="manifest"):
        bsa.Index.open(tmp_path / "idx")
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(bsa.FormatError, match="not a safetensors model file"):
        bsa.Model.load(tmp_path / "model.safetensors")
    # A folder or a device is not a file to save to; the message has no command-line hint.
    with pytest.raises(IsADirectoryError, match="a directory; an output is written by replacing a file") as e:
        bsa.Model.load(work / "model.safetensors").save(tmp_path)
    assert "--out" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="the folder .* does not exist"):
        bsa.Model.load(work / "model.safetensors").save(tmp_path / "missing" / "m.safetensors")
    with pytest.raises(bsa.FormatError, match="<bytes>: not a safetensors model file"):
        bsa.Model.from_bytes(b"garbage")
    # The system's errors carry its number, for code that tells ENOENT from ENOSPC.
    import errno

    with pytest.raises(FileNotFoundError) as e:
        bsa.Model.load(tmp_path / "no-such-model.safetensors")
    assert e.value.errno == errno.ENOENT and "no-such-model" in str(e.value)
    truncated = (work / "model.safetensors").read_bytes()[:-4]
    with pytest.raises(bsa.FormatError, match="<bytes>"):
        bsa.Model.from_bytes(truncated)
    # Not bytes: said as such, with what was given.
    for other in (np.zeros(4, np.float32), memoryview(np.zeros(4, np.float32)), "text"):
        with pytest.raises(TypeError, match="data must be a model file's bytes .*not (ndarray|memoryview|str)"):
            bsa.Model.from_bytes(other)


def test_overwrite_replaces_only_an_index(work, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    index = bsa.Index.open(work / "idx")
    with pytest.raises(FileExistsError, match="not an index directory .* and not empty"):
        index.save(mine, overwrite=True)
    with pytest.raises(FileExistsError, match="not an index directory"):
        bsa.Index.build(codes=np.zeros((2, 1), np.uint8), path=mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    index.save(tmp_path / "copy")
    index.save(tmp_path / "copy", overwrite=True)
    assert len(bsa.Index.open(tmp_path / "copy")) == len(index)
    # Nor an index with a user's file kept inside it: replacing it would delete the file.
    (tmp_path / "copy" / "notes.txt").write_text("keep me too")
    with pytest.raises(FileExistsError, match=r"bsa did not write \(notes.txt\)"):
        index.save(tmp_path / "copy", overwrite=True)
    with pytest.raises(FileExistsError, match="move them out of the index first"):
        bsa.Index.build(codes=np.zeros((2, 1), np.uint8), path=tmp_path / "copy", overwrite=True)
    assert (tmp_path / "copy" / "notes.txt").read_text() == "keep me too"
    assert len(bsa.Index.open(tmp_path / "copy")) == len(index)


def test_a_model_loads_from_a_pipe_and_not_from_a_device(work):
    # Read once: a second read of a pipe found it empty ("header too small").
    import os
    import threading

    data = (work / "model.safetensors").read_bytes()
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as f:
            f.write(data)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        piped = bsa.Model.load(f"/dev/fd/{r}")
    finally:
        feeder.join()
        os.close(r)
    model = bsa.Model.load(work / "model.safetensors")
    assert (piped.bits, piped.training) == (model.bits, model.training)
    with pytest.raises(bsa.FormatError, match="device"):
        bsa.Model.load("/dev/zero")
    with pytest.raises(IsADirectoryError):
        bsa.Model.load(work)


def test_ids_to_filter_or_delete_may_be_a_set(index, queries, tmp_path):
    # numpy makes a set an object array: it was refused with a hint about ints of 2**63.
    allowed = {5, 17, 300, 9000}
    D, I = index.search(queries, 3, allow_ids=allowed)
    np.testing.assert_array_equal(I, index.search(queries, 3, allow_ids=sorted(allowed))[1])
    _, I = index.search(queries, 3, deny_ids=frozenset(I[0].tolist()))
    assert not set(I[0].tolist()) & allowed
    copy = bsa.Index.build(codes=np.arange(6, dtype=np.uint8).reshape(6, 1), path=tmp_path / "c")
    assert copy.delete({1, 2, 99}) == 2 and len(copy) == 4
    # One id per row: a set has no order.
    with pytest.raises(TypeError, match="ids is a set, which has no order"):
        bsa.Index.build(codes=np.zeros((2, 1), np.uint8), ids={1, 2})
    with pytest.raises(TypeError, match="ids is a set, which has no order"):
        copy.add(codes=np.zeros((2, 1), np.uint8), ids={10, 11})


def test_recall_reads_ids_of_any_integer_dtype():
    # uint64 ids of 2**63 or more became negative int64, misses: identical lists scored 0.
    big = np.array([[2**63, 2**64 - 1, 5]], np.uint64)
    assert bsa.recall(big, big, 3) == 1.0
    assert bsa.recall(big[:, ::-1].copy(), big, 2) == 0.5
    # -1 in gt (padded as search results are) is a neighbour no result finds.
    assert bsa.recall(np.array([[1, 2, -1]]), np.array([[1, 2, -1]]), 3) == pytest.approx(2 / 3)


def test_padding_bits_are_named_with_their_argument(index, model, tmp_path):
    # 512-bit codes have no padding: a 12-bit index does.
    twelve = bsa.Index.build(codes=np.zeros((3, 2), np.uint8), bits=12, path=tmp_path / "t")
    bad = np.array([[0, 0], [0, 0xF0]], np.uint8)
    for call, name in [
        (lambda: twelve.search(bad, 1), "q"),
        (lambda: bsa.Index.build(codes=bad, bits=12), "codes"),
        (lambda: twelve.add(codes=bad), "codes"),
    ]:
        with pytest.raises(ValueError, match=f"^{name}: row 1: bits beyond bit 12"):
            call()


def test_messages_name_pythons_arguments_beside_the_flags(work, queries, tmp_path):
    codes = np.arange(4, dtype=np.uint8).reshape(4, 1)
    plain = bsa.Index.build(codes=codes, inverted=False, path=tmp_path / "p")
    with pytest.raises(ValueError, match=r"hnsw=True from Python"):
        plain.search(codes, 1, mode="hnsw")
    with pytest.raises(ValueError, match=r"inverted=True from Python"):
        plain.search(codes, 1, mode="inverted")
    with pytest.raises(ValueError, match=r"upsert=True from Python"):
        plain.add(codes=codes[:1], ids=[0])
    # A graph on the data is said as that (it was called one on decoded vectors).
    model = bsa.Model.load(work / "model.safetensors")
    x = np.load(work / "query.npy")[:300]
    g = bsa.Index.build(x=x, model=model, hnsw=True, hnsw_on="data", vectors=True, m=8,
                        ef_construction=20)
    with pytest.raises(ValueError, match=r"graph was built on the data \(float vectors\)"):
        g.search(queries[:2], 5, mode="hnsw")
    assert g.info()["graph_on"] == "data" and "graph_on" not in plain.info()


def test_rows_not_of_unit_length_warn(queries):
    """Rows off unit length get one UserWarning, with bsa's words, wherever a model whose codes
    depend on a row's length encodes them (train, encode, build, add, a Hamming search); ADC
    searches (which divide by the length), normalised rows and sign bits stay silent."""
    x = queries.copy()
    x[[3, 50, 120]] *= 4
    x[7] *= 0.25

    def one_warning(call):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            out = call()
        hits = [str(m.message) for m in w if "not of unit length" in str(m.message)]
        assert len(hits) == 1 and issubclass(w[0].category, UserWarning), [str(m.message) for m in w]
        return out, hits[0]

    def silent(call):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return call()

    model, msg = one_warning(lambda: bsa.train(x, bits=64, k=4, epochs=1, progress=False))
    assert msg.startswith("4 of 200 rows of x are not of unit length (L2 norms 0.25 to 4)"), msg
    assert "bsa codes depend on a row's length" in msg, msg
    _, again = one_warning(lambda: model.encode(x))
    # Read in place whatever the strides: a Fortran-order array gets the same count.
    _, fortran = one_warning(lambda: model.encode(np.asfortranarray(x)))
    assert fortran == again == msg, (fortran, again, msg)
    silent(lambda: model.encode(queries))
    sign = bsa.train(queries, method="sign", progress=False)
    silent(lambda: sign.encode(x))
    index, _ = one_warning(lambda: bsa.Index.build(x=x, model=model, vectors=True))
    one_warning(lambda: index.search(x[:20], 5))
    silent(lambda: index.search(x[:20], 5, score="adc"))
    one_warning(lambda: index.add(x=x[:10], ids=np.arange(1000, 1010)))


def test_an_array_like_raising_keeps_its_error():
    # A review's finding: every exception from numpy.asarray (an `__array__`'s Ctrl-C, memory
    # or I/O error) became "q must be a numpy array", with no cause.
    class Lazy:
        def __init__(self, error):
            self.error = error

        def __array__(self, dtype=None, copy=None):
            raise self.error

    index = bsa.Index.build(codes=np.arange(80, dtype=np.uint8).reshape(40, 2), bits=16)
    for error in (KeyboardInterrupt(), MemoryError(), OSError("disk")):
        with pytest.raises(type(error)):
            index.search(Lazy(error), 1)
    with pytest.raises(TypeError, match="q must be a numpy array, got Lazy") as e:
        index.search(Lazy(ValueError("mine")), 1)
    assert isinstance(e.value.__cause__, ValueError)
