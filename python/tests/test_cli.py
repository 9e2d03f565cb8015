"""Python and the `bsa` command line give the same results on the same files, and read each
other's models and indexes."""

import warnings

import numpy as np
import pytest

import bsa
from conftest import DATA, NQ, cli_search, run_cli

K = 10
SCORES = ["hamming", "cosine", "jaccard", "overlap", "adc", "soft"]
CODE_SCORES = ["hamming", "cosine", "jaccard", "overlap"]


def assert_same(D, I, cli, scored):
    ids, distances, scores = cli
    assert I.shape == (NQ, K) and I.dtype == np.int64
    for i in range(NQ):
        n = len(ids[i])
        assert I[i, :n].tolist() == ids[i], f"query {i}"
        assert (I[i, n:] == -1).all()
        if scored:
            assert D.dtype == np.float32
            np.testing.assert_array_equal(D[i, :n], np.array(scores[i], dtype=np.float32))
        else:
            assert D.dtype == np.int32
            assert D[i, :n].tolist() == distances[i]


@pytest.mark.parametrize("mode", ["flat", "inverted"])
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("rescore", [None, 4])
def test_float_queries_equal_cli(work, queries, score, mode, rescore):
    index = bsa.Index.open(work / "idx")
    D, I = index.search(queries, K, score=score, mode=mode, rescore=rescore)
    extra = ["--score", score, "--mode", mode] + (["--rescore", rescore] if rescore else [])
    cli = cli_search(work / "idx", ["--queries", work / "query.npy"], K, *extra)
    assert_same(D, I, cli, scored=score != "hamming" or rescore is not None)


@pytest.mark.parametrize("mode", ["flat", "inverted"])
@pytest.mark.parametrize("score", CODE_SCORES)
def test_query_codes_equal_cli(work, score, mode):
    index = bsa.Index.open(work / "idx")
    qcodes = np.load(work / "qcodes.npy")
    D, I = index.search(qcodes, K, score=score, mode=mode)
    cli = cli_search(work / "idx", ["--query-codes", work / "qcodes.npy"], K, "--score", score, "--mode", mode)
    assert_same(D, I, cli, scored=score != "hamming")


@pytest.mark.parametrize("ef", [None, 16, 128])
@pytest.mark.parametrize("rescore", [None, 4])
def test_hnsw_equals_cli(work, queries, ef, rescore):
    index = bsa.Index.open(work / "idx")
    # ef 16 with rescore 4: the walk's list of 16 answers with the best 40 rows it scored.
    D, I = index.search(queries, K, mode="hnsw", ef=ef, rescore=rescore)
    extra = ["--mode", "hnsw"] + (["--ef", ef] if ef else []) + (["--rescore", rescore] if rescore else [])
    cli = cli_search(work / "idx", ["--queries", work / "query.npy"], K, *extra)
    assert_same(D, I, cli, scored=rescore is not None)


def test_ef_below_k_is_refused(work, queries):
    index = bsa.Index.open(work / "idx")
    with pytest.raises(ValueError, match="ef 5 is below k 10"):
        index.search(queries, K, mode="hnsw", ef=5)


def test_max_distance_and_k_above_n_equal_cli(work, queries):
    index = bsa.Index.open(work / "idx")
    D, I = index.search(queries, K, max_distance=20)
    cli = cli_search(work / "idx", ["--queries", work / "query.npy"], K, "--max-dist", 20)
    assert_same(D, I, cli, scored=False)
    assert (I == -1).any(), "some queries should have fewer than k codes within distance 20"
    assert (D[I == -1] == 2**31 - 1).all()


def test_default_score_on_pursuit_codes_warns(work, queries):
    """The fixture's codes are a pursuit model's: Hamming, the default, ranks them poorly, and
    says so (as `bsa search` notes on stderr); asked for by name, or as a range, it does not."""
    index = bsa.Index.open(work / "idx")
    with pytest.warns(UserWarning, match='searched with score="adc"'):
        D, I = index.search(queries, K)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D2, I2 = index.search(queries, K, score="hamming")
        index.search(queries, K, max_distance=20)
        index.search(np.load(work / "qcodes.npy"), K)
        index.search(queries, K, score="adc")
    np.testing.assert_array_equal(D, D2)
    np.testing.assert_array_equal(I, I2)


def test_range_without_k_returns_every_hit_in_range(work, queries):
    index = bsa.Index.open(work / "idx")
    for kw in [dict(max_distance=20), dict(score="adc", min_score=0.3)]:
        D, I = index.search(queries, None, **kw)
        Dn, In = index.search(queries, len(index), **kw)
        width = (In != -1).sum(axis=1).max()
        assert I.shape == (len(queries), width) and width > 0, kw
        np.testing.assert_array_equal(I, In[:, :width], err_msg=str(kw))
        np.testing.assert_array_equal(D, Dn[:, :width], err_msg=str(kw))
    with pytest.raises(ValueError, match="k=None returns every hit in range"):
        index.search(queries, None)


def test_model_encode_decode_eval_equal_cli(work, queries):
    model = bsa.Model.load(work / "model.safetensors")
    assert (model.bits, model.k, model.dim, model.method) == (512, 16, 384, "pursuit")
    codes = model.encode(queries)
    np.testing.assert_array_equal(codes, np.load(work / "qcodes.npy"))
    assert codes.dtype == np.uint8 and codes.shape == (NQ, 64)
    assert (np.unpackbits(codes, axis=1, bitorder="little").sum(axis=1) == 16).all()
    xhat = model.decode(codes)
    assert xhat.shape == (NQ, 384) and xhat.dtype == np.float32
    import json

    cli = json.loads(run_cli("eval", "--model", work / "model.safetensors", "--data", work / "query.npy", "--json").stdout)
    assert model.eval(queries) == cli
    # The decoded vectors are what the reconstruction loss measures.
    cos = (xhat * queries).sum(1) / np.linalg.norm(xhat, axis=1) / np.linalg.norm(queries, axis=1)
    assert abs((1 - cos).mean() - cli["reconstruction_loss"]) < 1e-5


def test_model_bytes_and_pickle_are_the_file(work, queries):
    import pickle

    path = work / "model.safetensors"
    model = bsa.Model.load(path)
    # The bytes are the file bsa train wrote (bsa writes a model's bytes deterministically).
    assert model.to_bytes() == path.read_bytes()
    raw = path.read_bytes()
    copies = [bsa.Model.from_bytes(b) for b in (raw, bytearray(raw), memoryview(raw))]
    for again in copies + [pickle.loads(pickle.dumps(model))]:
        assert (again.bits, again.k, again.dim, again.method) == (model.bits, model.k, model.dim, model.method)
        np.testing.assert_array_equal(again.encode(queries), model.encode(queries))
        assert again.to_bytes() == model.to_bytes()


def test_train_equals_cli(work, base):
    """The same settings and threads give the same model from Python as from `bsa train`."""
    model = bsa.train(base, method="pursuit", bits=512, k=16, rounds=2, threads=2, progress=False)
    cli = bsa.Model.load(work / "model.safetensors")
    q = np.load(work / "query.npy")
    np.testing.assert_array_equal(model.encode(q), cli.encode(q))
    np.testing.assert_array_equal(model.decode(model.encode(q)), cli.decode(cli.encode(q)))


def test_python_index_opens_in_cli(work, tmp_path, base, queries):
    """An index built and saved in Python is searched by the CLI with the same results, and the
    reverse direction is every test above."""
    model = bsa.Model.load(work / "model.safetensors")
    ids = np.arange(len(base), dtype=np.int64) * 3 + 7
    index = bsa.Index.build(x=base, model=model, ids=ids, vectors=True, inverted=True)
    assert len(index) == len(base) and index.bits == 512 and index.has_vectors and index.has_inverted
    index.save(tmp_path / "py-idx")
    run_cli("verify", "--index", tmp_path / "py-idx")
    for score, rescore in [("hamming", None), ("adc", 4), ("soft", None)]:
        D, I = index.search(queries, K, score=score, rescore=rescore)
        extra = ["--score", score] + (["--rescore", rescore] if rescore else [])
        cli = cli_search(tmp_path / "py-idx", ["--queries", work / "query.npy"], K, *extra)
        assert_same(D, I, cli, scored=score != "hamming" or rescore is not None)
        # And the CLI's own index of the same model and data gives the same rows.
        D2, I2 = bsa.Index.open(work / "idx").search(queries, K, score=score, rescore=rescore)
        np.testing.assert_array_equal(I, I2 * 3 + 7)
        np.testing.assert_array_equal(D, D2)


def test_index_from_codes_opens_in_cli(work, tmp_path):
    codes = np.load(work / "qcodes.npy")
    path = tmp_path / "codes-idx"
    index = bsa.Index.build(codes=codes, path=path)
    assert index.path == path or str(index.path) == str(path)
    cli = cli_search(path, ["--query-codes", work / "qcodes.npy"], K)
    D, I = index.search(codes, K)
    assert_same(D, I, cli, scored=False)
    assert (D[:, 0] == 0).all()
    with pytest.raises(FileExistsError):
        bsa.Index.build(codes=codes, path=path)
    bsa.Index.build(codes=codes[:5], path=path, overwrite=True)
    assert len(bsa.Index.open(path)) == 5
    # What a killed build left beside the index is pointed out (as `bsa build` does), not
    # removed: another build may be writing it.
    left = tmp_path / ".codes-idx.tmp-999999"
    left.mkdir()
    with pytest.warns(UserWarning, match=r"\.codes-idx\.tmp-999999 was left by a build"):
        bsa.Index.build(codes=codes[:4], path=path, overwrite=True)
    assert left.is_dir() and len(bsa.Index.open(path)) == 4


def test_groundtruth_equals_cli(work, base, queries, tmp_path):
    gt = bsa.groundtruth(base, queries, 20)
    run_cli("groundtruth", "--base", DATA / "base.npy", "--queries", work / "query.npy", "--k", 20,
            "--quiet", "--out", tmp_path / "gt.npy")
    np.testing.assert_array_equal(gt, np.load(tmp_path / "gt.npy"))
    assert gt.dtype == np.int64
    np.testing.assert_array_equal(gt, np.load(DATA / "gt_top100.npy")[:NQ, :20])
    assert bsa.recall(gt, gt, 10) == 1.0
    index = bsa.Index.open(work / "idx")
    _, I = index.search(queries, 10, score="adc", rescore=4)
    r = bsa.recall(I, gt, 10)
    assert 0.5 < r <= 1.0
    # -1 (no hit) is a miss where it stands: the results behind it do not move up into the k.
    assert bsa.recall(np.array([[-1, 1]]), np.array([[1, 2]]), 1) == 0.0
    assert bsa.recall(np.array([[-1, 2, 1]]), np.array([[1, 2]]), 2) == 0.5


def test_adc_graph_equals_cli(work, queries, tmp_path):
    """The graph on the decoded codes (the default with a model), searched by ADC: the same
    answers from Python and from the CLI on the same index, built in Python."""
    model = bsa.Model.load(work / "model.safetensors")
    base = np.load(DATA / "base.npy")[:5000]
    bsa.Index.build(x=base, model=model, vectors=True, hnsw=True, m=16, ef_construction=40,
                    path=tmp_path / "g")
    index = bsa.Index.open(tmp_path / "g")
    D, I = index.search(queries, K, mode="hnsw", score="adc", ef=64, rescore=4)
    cli = cli_search(tmp_path / "g", ["--queries", work / "query.npy"], K,
                     "--mode", "hnsw", "--score", "adc", "--ef", 64, "--rescore", 4)
    assert_same(D, I, cli, scored=True)
    with pytest.raises(ValueError, match="built on the decoded codes"):
        index.search(queries, K, mode="hnsw")


def test_groundtruth_pads_a_small_base_and_answers_an_empty_batch(base, queries):
    # As a search pads its results with -1 (and as `recall` reads a padded ground truth): the
    # default k of 100 on a base of 5 rows is not an error.
    gt = bsa.groundtruth(base[:5], queries[:3], 8)
    assert gt.shape == (3, 8) and (gt[:, 5:] == -1).all()
    np.testing.assert_array_equal(gt[:, :5], bsa.groundtruth(base[:5], queries[:3], 5))
    np.testing.assert_array_equal(np.sort(gt[:, :5], axis=1), np.tile(np.arange(5), (3, 1)))
    assert bsa.recall(gt, gt, 8) == 5 / 8  # a padded place is one no result finds
    assert bsa.groundtruth(base, queries[:0], 10).shape == (0, 10)
    with pytest.raises(ValueError, match="queries have 5 columns but base has 384"):
        bsa.groundtruth(base, queries[:0, :5], 10)


def test_an_empty_batch_gets_empty_answers(work, queries):
    # As FAISS answers one: a caller's last, empty batch needs no special case. The widths are
    # still checked, rows or not.
    index = bsa.Index.open(work / "idx")
    model = index.model
    codes = model.encode(queries[:0])
    assert (codes.shape, codes.dtype) == ((0, model.bits // 8), np.uint8)
    assert model.decode(codes).shape == (0, queries.shape[1])
    for q, kw, d_type in [
        (queries[:0], dict(), np.int32),
        (codes, dict(), np.int32),
        (queries[:0], dict(score="adc", rescore=4), np.float32),
        (queries[:0], dict(mode="inverted", score="soft"), np.float32),
    ]:
        D, I = index.search(q, 7, **kw)
        assert (D.shape, D.dtype, I.shape, I.dtype) == ((0, 7), d_type, (0, 7), np.int64), kw
    D, I = index.search(queries[:0], None, max_distance=5)
    assert D.shape == I.shape == (0, 0)
    with pytest.raises(ValueError, match="bytes per query code .* expected 64, got 3"):
        index.search(np.zeros((0, 3), np.uint8), 5)
    with pytest.raises(ValueError, match="expected 384, got 5"):
        index.search(np.zeros((0, 5), np.float32), 5)
    with pytest.raises(ValueError, match="bytes per code .* expected 64, got 3"):
        model.decode(np.zeros((0, 3), np.uint8))
