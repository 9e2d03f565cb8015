"""FORMAT.md and the bytes `bsa` writes agree: format_reader.py, written from FORMAT.md alone,
reads every kind of index the command line builds, and its parse answers as `bsa` does.

Needs the `bsa` binary and numpy only (not the `bsa` Python module)."""

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

import format_reader as fr
from conftest import DATA, bsa_binary, cli_search, run_cli

N = 1500  # base rows: small, so that every index builds in well under a second
NQ = 5
K = 10
DELETED = [5, 17, 120, 1250, 1499]  # 120 is also upserted: its new row is deleted too
UPSERTED = np.arange(100, 150)
TIED_M = 2


def save(d: Path, name, array):
    np.save(d / name, array)
    return d / name


def encoded(d: Path, model, data_file, bits=256):
    """`bsa encode`'s codes of a `bits`-bit model as an n x bits 0/1 matrix."""
    out = d / (data_file.stem + ".codes.npy")
    run_cli("encode", "--model", model, "--data", data_file, "--out", out, "--threads", 2)
    return unpack(np.load(out), bits)


def unpack(packed, bits):
    return np.unpackbits(packed, axis=1, bitorder="little")[:, :bits]


def random_codes(rng, n, bits, ones):
    """n codes of `bits` bits with `ones` set bits each, as an n x bits 0/1 matrix."""
    B = np.zeros((n, bits), np.uint8)
    B[np.arange(n)[:, None], np.argsort(rng.random((n, bits)), axis=1)[:, :ones]] = 1
    return B


def packed(B):
    return np.packbits(B, axis=1, bitorder="little")


class Kind:
    """An index the CLI built, and what its parse must hold: `codes[i]` the codes of segment i
    by id (a dict), `queries` the search's query arguments and `qcodes` their codes, `parts`
    the file kinds the reader must have read (so that no branch is skipped unseen), `deleted`
    the ids of the deleted rows."""

    def __init__(self, path, codes, queries, qcodes, parts, deleted=()):
        self.path, self.codes, self.queries, self.qcodes = path, codes, queries, qcodes
        self.parts, self.deleted = parts, sorted(deleted)


class Inputs:
    """The files the indexes are built from: base rows, queries, a small pursuit model (one
    round on 1,500 rows: no training loop) and its codes as `bsa encode` gives them."""

    def __init__(self, d: Path):
        self.d, self.rng = d, np.random.default_rng(7)
        self.base = np.load(DATA / "base.npy")
        self.data = save(d, "base.npy", self.base[:N])
        self.queries = save(d, "query.npy", np.load(DATA / "query.npy")[:NQ])
        self.model = d / "model.safetensors"
        run_cli("train", "--data", self.data, "--method", "pursuit", "--bits", 256, "--k", 16,
                "--rounds", 1, "--threads", 2, "--quiet", "--out", self.model)
        self.by_row = dict(enumerate(encoded(d, self.model, self.data)))
        self.float_q = (["--queries", self.queries], encoded(d, self.model, self.queries))

    def query_codes(self, bits, ones):
        qB = random_codes(self.rng, NQ, bits, ones)
        return ["--query-codes", save(self.d, f"q{bits}.npy", packed(qB))], qB


def build(out, *args, m=8, threads=2):
    graph = ["--m", m] if "--hnsw" in args else []  # M 8: a small graph, quick to build
    run_cli("build", *args, *graph, "--threads", threads, "--quiet", "--out", out)


def codes_kinds(x: Inputs):
    d, k = x.d, {}
    # 100 bits (not whole words), ids given out of order: rows are stored sorted by id.
    B, ids = random_codes(x.rng, N, 100, 12), x.rng.choice(10**12, N, replace=False)
    build(d / "codes", "--codes", save(d, "c100.npy", packed(B)), "--bits", 100,
          "--ids", save(d, "ids.npy", ids), "--inverted")
    k["codes_ids"] = Kind(d / "codes", [dict(zip(ids.tolist(), B))], *x.query_codes(100, 12),
                          {"codes", "ids", "inverted", "bitmaps"})
    # A Hamming graph on wide sparse codes: sparse.bin is written by its size rule.
    B = random_codes(x.rng, N, 1024, 8)
    build(d / "hamming", "--codes", save(d, "c1024.npy", packed(B)), "--hnsw", "--inverted")
    k["hamming_graph"] = Kind(d / "hamming", [dict(enumerate(B))], *x.query_codes(1024, 8),
                              {"codes", "ids", "inverted", "bitmaps", "sparse", "graph"})
    # Identical codes: the builder widens level 0 past 2M to link the nodes hnsw_rs left unreached.
    B = np.zeros((300, 64), np.uint8)
    B[:, 0] = 1
    build(d / "tied", "--codes", save(d, "tied.npy", packed(B)), "--hnsw", m=TIED_M, threads=1)
    k["tied_graph"] = Kind(d / "tied", [dict(enumerate(B))], *x.query_codes(64, 4),
                           {"codes", "ids", "inverted", "bitmaps", "graph"})
    return k


def model_kinds(x: Inputs):
    d, k = x.d, {}
    # Vectors, posting lists, bitmaps and a graph on the decoded vectors.
    build(d / "full", "--model", x.model, "--data", x.data, "--vectors", "--inverted", "--bitmaps",
          "--hnsw", "--hnsw-on", "decoded")
    k["model_full"] = Kind(d / "full", [x.by_row], *x.float_q,
                           {"codes", "ids", "vectors", "norms", "inverted", "bitmaps", "graph", "model"})
    build(d / "f16", "--model", x.model, "--data", x.data, "--vectors", "--f16")
    k["f16"] = Kind(d / "f16", [x.by_row], *x.float_q, {"codes", "ids", "vectors", "norms", "model"})
    return k


def segmented_kinds(x: Inputs):
    """Built on the first rows, the rest added, ids 100..149 upserted, a few deleted (each a
    segment of its own: --merge-factor 0); then a copy compacted."""
    d, first = x.d, 1200
    build(d / "seg", "--model", x.model, "--data", save(d, "first.npy", x.base[:first]), "--vectors",
          "--inverted", "--hnsw", "--hnsw-on", "decoded")
    run_cli("add", "--index", d / "seg", "--data", save(d, "rest.npy", x.base[first:N]), "--merge-factor", 0)
    upsert = save(d, "upsert.npy", x.base[N:N + len(UPSERTED)])
    run_cli("add", "--index", d / "seg", "--data", upsert, "--ids", save(d, "up_ids.npy", UPSERTED),
            "--upsert", "--merge-factor", 0)
    run_cli("delete", "--index", d / "seg", "--ids", save(d, "deleted.npy", np.array(DELETED)))
    shutil.copytree(d / "seg", d / "compacted")
    run_cli("compact", "--index", d / "compacted")
    up = dict(zip(UPSERTED.tolist(), encoded(d, x.model, upsert)))
    parts = {"codes", "ids", "vectors", "norms", "inverted", "bitmaps", "graph"}
    return {
        # seg-000000 keeps the model copy it had as a single-segment index; the upsert's
        # replaced rows count as deleted (the bridges: the graph is on vectors).
        "segmented": Kind(d / "seg", [x.by_row, x.by_row, up], *x.float_q, parts | {"model", "deletes", "bridge"},
                          deleted=[*UPSERTED.tolist(), *DELETED]),
        "compacted": Kind(d / "compacted", [{**x.by_row, **up}], *x.float_q, parts),
    }


@pytest.fixture(scope="session")
def kinds(tmp_path_factory):
    x = Inputs(tmp_path_factory.mktemp("format"))
    return {**codes_kinds(x), **model_kinds(x), **segmented_kinds(x)}


KINDS = ["codes_ids", "model_full", "hamming_graph", "tied_graph", "f16", "segmented", "compacted"]


@pytest.mark.parametrize("name", KINDS)
def test_reader_validates_and_reads_the_codes(kinds, name):
    kind = kinds[name]
    index = fr.read_index(kind.path)
    assert index.version == (2 if name in ("segmented", "compacted") else 1)
    assert set().union(*(s.parts for s in index.segments)) == kind.parts
    assert len(index.segments) == len(kind.codes)
    for seg, by_id in zip(index.segments, kind.codes):
        # Every row's code is the one its id was given (input codes, or `bsa encode`'s).
        expected = np.array([by_id[i] for i in seg.ids.tolist()])
        np.testing.assert_array_equal(seg.codes, expected, err_msg=seg.name)
    assert sorted(index.deleted_ids().tolist()) == kind.deleted


@pytest.mark.parametrize("name", ["model_full", "f16", "segmented"])
def test_codes_follow_the_encoding_rule(kinds, name):
    """FORMAT.md's encoding rule, applied to the stored model, gives the stored codes."""
    index = fr.read_index(kinds[name].path)
    seg = index.segments[0]
    base = np.load(DATA / "base.npy")
    np.testing.assert_array_equal(fr.encode(index.model, base[seg.ids.astype(np.int64)]), seg.codes)


@pytest.mark.parametrize("name", KINDS)
def test_hamming_top_k_over_parsed_codes_equals_flat_search(kinds, name):
    kind = kinds[name]
    codes, ids = fr.read_index(kind.path).live()
    cli_ids, cli_dist, _ = cli_search(kind.path, kind.queries, K, "--mode", "flat", "--score", "hamming")
    for q, want_ids, want_dist in zip(kind.qcodes, cli_ids, cli_dist):
        dist = (codes != q).sum(axis=1)
        top = np.lexsort((ids, dist))[:K]  # by distance, ties to the lower id
        assert ids[top].tolist() == want_ids
        assert dist[top].tolist() == want_dist


def test_level0_of_a_graph_of_tied_codes_is_wider_than_2m(kinds):
    """FORMAT.md allows stride0 up to 2M + 2; this index is there to exercise that rule (if bsa
    stops widening it, the kind no longer covers the rule and should be changed)."""
    seg = fr.read_index(kinds["tied_graph"].path).segments[0]
    assert 2 * TIED_M < seg.graph_level0.shape[1] <= 2 * TIED_M + 2


def test_f16_vectors_are_the_rows_divided_by_their_norm(kinds):
    seg = fr.read_index(kinds["f16"].path).segments[0]
    x = np.load(DATA / "base.npy")[:N].astype(np.float64)
    expected = (x * (1 / np.sqrt((x * x).sum(axis=1, keepdims=True)))).astype(np.float32).astype(np.float16)
    assert seg.vectors.dtype == np.float16
    np.testing.assert_array_equal(seg.vectors.view(np.uint16), expected.view(np.uint16))


# ------------------------------------------------------------------ damage


def copy(kinds, name, tmp_path):
    return Path(shutil.copytree(kinds[name].path, tmp_path / name))


def verify_ok(index) -> bool:
    """Whether `bsa verify` accepts the index (run_cli would fail the test on a refusal)."""
    return subprocess.run([str(bsa_binary()), "verify", "--index", str(index)], capture_output=True).returncode == 0


def reader_ok(index) -> bool:
    try:
        fr.read_index(index)
        return True
    except fr.FormatError:
        return False


def one_file(index, pattern):
    (path,) = index.glob(pattern)
    return path


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("model_full", "codes.bin"),
        ("model_full", "ids.bin"),
        ("model_full", "vectors.bin"),
        ("model_full", "inverted.bin"),
        ("model_full", "graph.bin"),
        ("model_full", "model.safetensors"),
        ("hamming_graph", "sparse.bin"),
        ("segmented", "deletes-seg-000000-*.bin"),
        ("segmented", "bridge-seg-000001-*.bin"),
    ],
)
def test_a_flipped_payload_byte_is_refused(kinds, tmp_path, name, pattern):
    index = copy(kinds, name, tmp_path)
    path = one_file(index, pattern)
    b = bytearray(path.read_bytes())
    b[64 + (len(b) - 64) // 2] ^= 0x10  # past the 64-byte header of a .bin: in the payload
    path.write_bytes(b)
    assert not reader_ok(index)
    assert not verify_ok(index)


@pytest.mark.parametrize(
    "name, pattern, kind, bit",
    [
        ("model_full", "codes.bin", "codes", 17),
        ("model_full", "ids.bin", "ids", 31),
        ("model_full", "graph.bin", "graph", 20),
        ("segmented", "deletes-seg-000000-*.bin", "deletes", 24),
        ("segmented", "seg-000001/vectors.bin", "vectors", 16),
    ],
)
def test_a_compatible_flag_with_its_header_crc_is_accepted(kinds, tmp_path, name, pattern, kind, bit):
    """Bits 16-31 of `flags` are hints readers may ignore (bit 16 of ids.bin excepted, which the
    full check holds to its meaning): set with the header CRC recomputed, nothing refuses them."""
    index = copy(kinds, name, tmp_path)
    path = one_file(index, pattern)
    b = bytearray(path.read_bytes())
    (flags,) = struct.unpack_from("<I", b, 12)
    struct.pack_into("<I", b, 12, flags | 1 << bit)
    struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[:60])))
    path.write_bytes(b)
    assert fr.read_binary(path, kind).header["flags"] >> bit & 1  # the edit took, and was read
    assert reader_ok(index)
    assert verify_ok(index)


def test_a_writers_lock_file_is_no_part_of_the_format(kinds, tmp_path):
    """A writer opened on a single-segment index leaves its LOCK file (a refused `bsa add`, a
    delete of nothing): the manifest does not list it, and neither reader minds it."""
    index = copy(kinds, "model_full", tmp_path)
    (index / "LOCK").write_bytes(b"")
    fr.read_index(index)
    assert verify_ok(index)


@pytest.mark.parametrize(
    "method",
    [
        ["--method", "bsa", "--bits", "64", "--k", "8", "--epochs", "1"],
        ["--method", "topk", "--bits", "64", "--k", "8", "--epochs", "1"],
        ["--method", "sign"],
        ["--method", "lsh", "--bits", "64"],
        ["--method", "itq", "--bits", "32"],
    ],
    ids=lambda m: m[1],
)
def test_every_method_s_codes_follow_the_encoding_rule(tmp_path, method):
    """FORMAT.md's rule of each method, applied to the index's model, gives its codes, which
    are `bsa encode`'s (the pursuit model of the other tests is one more method)."""
    rows = np.load(DATA / "base.npy")[:300]
    data = save(tmp_path, "x.npy", rows)
    model = tmp_path / "m.safetensors"
    run_cli("train", "--data", data, *method, "--threads", 2, "--quiet", "--out", model)
    build(tmp_path / "idx", "--model", model, "--data", data)
    seg = fr.read_index(tmp_path / "idx").segments[0]
    assert seg.model.method == method[1]
    codes = fr.encode(seg.model, rows[seg.ids.astype(np.int64)])
    np.testing.assert_array_equal(codes, seg.codes)
    np.testing.assert_array_equal(seg.codes, encoded(tmp_path, model, data, seg.bits)[seg.ids.astype(np.int64)])
