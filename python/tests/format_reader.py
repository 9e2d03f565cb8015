"""An independent reader and validator of bsa's index directories, written from
`index/FORMAT.md` alone (no Rust source was read to write it).

It exists so that FORMAT.md and the bytes bsa writes cannot drift apart unseen: test_format.py
runs it over indexes the `bsa` command line builds. Change it only together with FORMAT.md, and
only to follow what FORMAT.md says; never to follow the code.

`read_index(path)` parses every file the manifests name, checks every rule FORMAT.md states for
the files this version writes (headers, both CRCs, the manifest envelope, payload rules,
`inverted.bin` / `sparse.bin` / `bitmaps.bin` rebuilt from the codes and compared byte for byte,
`graph.bin`, deletes, bridges, the model) and raises `FormatError` at the first violation. It
checks what this version writes, so it is stricter than a reader of older files must be: a
payload at offset 64, ids ascending, no file the manifest does not name. It needs numpy only.
"""

import json
import os
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np


class FormatError(Exception):
    """A file breaks a rule of FORMAT.md."""


def crc32(b) -> int:
    return zlib.crc32(b) & 0xFFFFFFFF


def check(cond, msg):
    if not cond:
        raise FormatError(msg)


def align64(x: int) -> int:
    return (x + 63) // 64 * 64


# ------------------------------------------------------------------ binary files

MAGIC = {
    "codes": b"BSA\0CODE", "ids": b"BSA\0IDS\0", "vectors": b"BSA\0VECS", "inverted": b"BSA\0INVL",
    "norms": b"BSA\0NRMS", "sparse": b"BSA\0SPRS", "bitmaps": b"BSA\0BMAP", "graph": b"BSA\0HNSW",
    "deletes": b"BSA\0DELS", "bridge": b"BSA\0BRDG",
}
HEADER = struct.Struct("<8sIIQIIHHIQQII")
HEADER_FIELDS = ("magic", "version", "flags", "count", "width", "row_elems", "elem_kind",
                 "elem_size", "payload_crc32", "payload_offset", "payload_len", "reserved",
                 "header_crc32")
ELEM_SIZE = {1: 8, 2: 4, 3: 2}  # elem_kind -> bytes: u64, f32, f16
# Files whose payload describes its own sections: row_elems 0, length a positive multiple of 64.
SECTIONED = ("inverted", "sparse", "bitmaps", "graph")
FLAG_IDS_ROW_NUMBERS = 1 << 16


@dataclass
class Binary:
    header: dict
    payload: bytes
    whole: bytes


def read_binary(path, kind) -> Binary:
    """One `*.bin` file: the header checks in FORMAT.md's order, then the payload CRC."""
    name = os.path.basename(path)
    with open(path, "rb") as f:
        data = f.read()
    check(data[:8] == MAGIC[kind], f"{name}: magic {data[:8]!r}, not {MAGIC[kind]!r}")
    check(len(data) >= 64, f"{name}: truncated header")
    h = dict(zip(HEADER_FIELDS, HEADER.unpack_from(data, 0)))
    check(crc32(data[:60]) == h["header_crc32"], f"{name}: header CRC")
    check(h["version"] == 1, f"{name}: version {h['version']}")
    # Bits 0..16 are incompatible features (none in v1); 16..32 hints a reader may ignore.
    check(h["flags"] & 0xFFFF == 0, f"{name}: unknown incompatible flags {h['flags']:#x}")
    check(h["reserved"] == 0, f"{name}: reserved header field")
    check_elems(name, kind, h)
    if kind in SECTIONED:
        check(h["payload_len"] > 0 and h["payload_len"] % 64 == 0, f"{name}: payload_len")
    else:
        check(h["payload_len"] == h["count"] * h["row_elems"] * h["elem_size"], f"{name}: payload_len")
    # v1 writes the payload right after the header.
    check(h["payload_offset"] == 64, f"{name}: payload_offset {h['payload_offset']}")
    check(len(data) == h["payload_offset"] + h["payload_len"], f"{name}: length {len(data)}")
    payload = data[h["payload_offset"]:]
    check(crc32(payload) == h["payload_crc32"], f"{name}: payload CRC")
    return Binary(h, payload, data)


def check_elems(name, kind, h):
    """Element kind and size for the file kind, and row_elems against width."""
    kind_ok = {"vectors": (2, 3), "norms": (2,)}.get(kind, (1,))
    check(h["elem_kind"] in kind_ok and ELEM_SIZE[h["elem_kind"]] == h["elem_size"],
          f"{name}: elem_kind {h['elem_kind']} / elem_size {h['elem_size']}")
    w, r = h["width"], h["row_elems"]
    if kind == "codes":
        check(r == (w + 63) // 64, f"{name}: row_elems {r} for {w} bits")
    elif kind in ("ids", "deletes", "bridge"):
        check(w == 64 and r == 1, f"{name}: width/row_elems {w}/{r}")
    elif kind == "vectors":
        check(r == w, f"{name}: row_elems {r} != dim {w}")
    elif kind == "norms":
        check(w == 1 and r == 1, f"{name}: width/row_elems {w}/{r}")
    else:
        check(r == 0, f"{name}: row_elems {r}")
        check(kind == "graph" or w <= 65535, f"{name}: width {w}")


def check_file_info(path, info):
    """Whole-file length and CRC against the manifest's `files` entry (or `info`)."""
    name = os.path.basename(path)
    with open(path, "rb") as f:
        b = f.read()
    check(len(b) == info["len"] and crc32(b) == info["crc32"], f"{name}: whole-file length/CRC")
    return b


def plain(name):
    check(isinstance(name, str) and name and not any(s in name for s in ("/", "\\", "..", "\0")),
          f"file name {name!r} is not plain")
    return name


# ------------------------------------------------------------------ manifest

def manifest_value_end(raw: bytes, start: int) -> int:
    """One past the `}` matching the `{` at start, skipping JSON strings."""
    depth, i, in_str = 0, start, False
    while i < len(raw):
        c = raw[i:i + 1]
        if in_str:
            if c == b"\\":
                i += 1
            elif c == b'"':
                in_str = False
        elif c == b'"':
            in_str = True
        elif c == b"{":
            depth += 1
        elif c == b"}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise FormatError("manifest.json: unbalanced braces")


def read_manifest(d, version):
    """The envelope: its exact prefix as this version writes it, the CRC over the value's bytes
    as they appear in the file (not re-serialised), then `}` and a newline."""
    with open(os.path.join(d, "manifest.json"), "rb") as f:
        raw = f.read()
    env = json.loads(raw.decode("utf-8"))
    check(env.get("format") == "bsa-index", "manifest.json: format")
    check(env.get("format_version") == version, f"manifest.json: format_version {env.get('format_version')}")
    prefix = b'{"format":"bsa-index","format_version":%d,"crc32":%d,"manifest":' % (version, env["crc32"])
    check(raw.startswith(prefix), f"manifest.json: envelope {raw[:80]!r}")
    end = manifest_value_end(raw, len(prefix))
    check(crc32(raw[len(prefix):end]) == env["crc32"], "manifest.json: CRC")
    check(raw[end:] == b"}\n", "manifest.json: envelope tail")
    return env["manifest"]


# ------------------------------------------------------------------ codes and derived files

def unpack_codes(words: np.ndarray, bits: int) -> np.ndarray:
    """n x W u64 words -> n x bits 0/1 matrix (bit j is bit j % 64 of word j / 64)."""
    n, w = words.shape
    m = np.unpackbits(words.astype("<u8").view(np.uint8).reshape(n, 8 * w), axis=1, bitorder="little")
    check(not m[:, bits:].any(), "codes.bin: a bit at or past `bits` is set")
    return m[:, :bits]


def pad64(out: bytearray):
    out += bytes(align64(len(out)) - len(out))


def sub_header(total: int) -> bytes:
    return struct.pack("<Q", total) + bytes(56)


def build_inverted(B: np.ndarray) -> bytes:
    """inverted.bin's payload as FORMAT.md derives it from the codes (gaps zero)."""
    n, bits = B.shape
    lists = [np.nonzero(B[:, j])[0] for j in range(bits)]
    off = np.zeros(bits + 1, "<u8")
    off[1:] = np.cumsum([len(x) for x in lists])
    pc = B.sum(1).astype("<u2")
    po = np.zeros(bits + 2, "<u4")
    po[1:] = np.cumsum(np.bincount(pc, minlength=bits + 1))
    out = bytearray(sub_header(int(off[-1])))
    for section in (off, np.concatenate(lists).astype("<u4"), pc,
                    np.lexsort((np.arange(n), pc)).astype("<u4"), po):
        out += section.tobytes()
        pad64(out)
    return bytes(out)


def build_sparse(B: np.ndarray) -> bytes:
    n, bits = B.shape
    rows, cols = np.nonzero(B)  # row-major: each code's bits ascending
    off = np.zeros(n + 1, "<u8")
    off[1:] = np.cumsum(B.sum(1))
    out = bytearray(sub_header(len(cols)))
    for section in (off, cols.astype("<u2")):
        out += section.tobytes()
        pad64(out)
    return bytes(out)


def build_bitmaps(B: np.ndarray) -> bytes:
    n, bits = B.shape
    chunks = (n + 511) // 512
    pc = B.sum(1).astype("<u2")
    minima = np.array([pc[512 * c:512 * c + 512].min() for c in range(chunks)], "<u2")
    padded = np.zeros((chunks * 512, bits), np.uint8)  # rows >= n are zero bits
    padded[:n] = B
    columns = np.packbits(padded.T, axis=1, bitorder="little")
    out = bytearray(sub_header(int(B.sum())))
    for section in (B.sum(0).astype("<u4"), pc, minima, columns):
        out += section.tobytes()
        pad64(out)
    return bytes(out)


def check_size_rules(B, has_sparse, has_bitmaps, has_inverted):
    """The builder writes sparse.bin whenever it is no larger than codes.bin (the command line
    cannot refuse it), and bitmaps.bin only beside inverted.bin."""
    n, bits = B.shape
    if 2 * int(B.sum()) + 8 * (n + 1) <= 8 * n * ((bits + 63) // 64) and bits <= 65535:
        check(has_sparse, "sparse.bin: the size rule says it is written, but it is absent")
    check(not has_bitmaps or has_inverted, "bitmaps.bin: written without inverted.bin")


# ------------------------------------------------------------------ graph.bin

NO_NEIGHBOUR = 0xFFFFFFFF


def parse_graph(b: Binary, n_manifest: int, m: int):
    """graph.bin's prelude and sections; returns the level-0 lists (n x stride0)."""
    pl, h = b.payload, b.header
    n, stride0, stride_up, max_level, entry, r0, upper_lists = struct.unpack_from("<IIIIIIQ", pl, 0)
    check(r0 == 0 and not any(pl[32:64]), "graph.bin: reserved prelude bytes")
    check(n == h["count"] == n_manifest and n >= 1, f"graph.bin: n {n}")
    check(h["width"] == stride0, "graph.bin: header width != stride0")
    # stride0 is 2M, or up to 2M + 2 where the builder linked unreached nodes.
    check(2 * m <= stride0 <= 2 * m + 2 and stride0 <= 4096, f"graph.bin: stride0 {stride0} for M {m}")
    check(stride_up == m, f"graph.bin: stride_upper {stride_up} for M {m}")
    check(max_level <= 63, "graph.bin: max_level")
    level_offsets, pos = section(pl, 64, "<u8", n + 1)
    level0, pos = section(pl, pos, "<u4", n * stride0)
    upper, pos = section(pl, pos, "<u4", upper_lists * stride_up)
    check(pos == len(pl), f"graph.bin: payload_len {len(pl)}, sections end at {pos}")
    levels = np.diff(level_offsets.astype(np.int64))
    check(level_offsets[0] == 0 and level_offsets[-1] == upper_lists and (levels >= 0).all(),
          "graph.bin: level offsets")
    check(levels.max() == max_level and levels[entry] == max_level, "graph.bin: entry level")
    check(entry == np.flatnonzero(levels == max_level)[0], "graph.bin: entry is not the smallest row")
    level0 = level0.reshape(n, stride0)
    lens0 = list_lengths(level0, n, "level 0")
    list_lengths(upper.reshape(upper_lists, stride_up), n, "upper")
    check_reachable(level0, lens0, entry)
    return level0


def section(pl: bytes, pos: int, dtype: str, count: int):
    """A section at pos and the start of the next; the gap before it must be zero."""
    arr = np.frombuffer(pl, dtype, count, pos)
    end = pos + arr.nbytes
    check(not any(pl[end:align64(end)]), f"graph.bin: non-zero gap at {end}")
    return arr, align64(end)


def list_lengths(lists: np.ndarray, n: int, what: str) -> np.ndarray:
    """Each list is its slots up to the first padding; every later slot is padding too."""
    pad = lists == NO_NEIGHBOUR
    first = np.where(pad.any(1), pad.argmax(1), lists.shape[1])
    after = np.arange(lists.shape[1])[None, :] >= first[:, None]
    check(not (after & ~pad).any(), f"graph.bin: {what}: a neighbour after padding")
    check(not (~pad & (lists >= n)).any(), f"graph.bin: {what}: a neighbour >= n")
    return first


def check_reachable(level0, lens, entry):
    """The builder adds links until every node is reachable from the entry on level 0."""
    seen = np.zeros(len(level0), bool)
    seen[entry] = True
    stack = [entry]
    while stack:
        v = stack.pop()
        for w in level0[v, :lens[v]]:
            if not seen[w]:
                seen[w] = True
                stack.append(int(w))
    check(seen.all(), f"graph.bin: {int((~seen).sum())} nodes unreachable from the entry")


# ------------------------------------------------------------------ the model

MODEL_TENSORS = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
METHODS = ("bsa", "topk", "sign", "lsh", "itq", "pursuit")


@dataclass
class Model:
    bits: int
    dim: int
    k: int
    method: str
    tensors: dict


def read_model(b: bytes, bits: int, dims) -> Model:
    """A safetensors file of four F32 tensors; metadata in bsa's dialect or the PyTorch peer's."""
    (hlen,) = struct.unpack_from("<Q", b, 0)
    hdr = json.loads(b[8:8 + hlen])
    meta = hdr.pop("__metadata__", {})
    check(set(hdr) == set(MODEL_TENSORS), f"model: tensors {sorted(hdr)}")
    if meta.get("format") == "bsa-model":
        check(meta["format_version"] == "1", "model: format_version")
        n, d, k, method = int(meta["bits"]), int(meta["dim"]), int(meta["k"]), meta["method"]
    else:
        n, d, k, method = int(meta["N"]), int(meta["D"]), int(meta["K"]), meta.get("mode", "bsa")
    check(method in METHODS, f"model: method {method}")
    check(n >= 1 and d >= 1 and 1 <= k <= n, "model: k/N/D")
    shapes = {"encoder.weight": [n, d], "encoder.bias": [n], "decoder.weight": [d, n], "decoder.bias": [d]}
    tensors = {}
    for name, shape in shapes.items():
        t = hdr[name]
        check(t["dtype"] == "F32" and t["shape"] == shape, f"model: {name} {t['dtype']} {t['shape']}")
        s, e = t["data_offsets"]
        tensors[name] = np.frombuffer(b, "<f4", (e - s) // 4, 8 + hlen + s).reshape(shape)
        check(np.isfinite(tensors[name]).all(), f"model: {name} not finite")
    # The model must fit its index: N is the code width, D the vectors' and graph's dim.
    check(n == bits, f"model: N {n} != index bits {bits}")
    check(all(x is None or x == d for x in dims), f"model: D {d} != {dims}")
    return Model(n, d, k, method, tensors)


def dot_rows(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    """dot(x_r, w_j) for every r, j as FORMAT.md fixes it: s = s + x_t * w_t, left to right,
    each product and sum rounded to f32 (numpy rounds each array op; no fused multiply-add)."""
    X, W = X.astype(np.float32), W.astype(np.float32)
    s = np.zeros((len(X), len(W)), np.float32)
    for t in range(X.shape[1]):
        s += X[:, t, None] * W[None, :, t]
    return s


def encode(model: Model, X: np.ndarray) -> np.ndarray:
    """Codes by FORMAT.md's rule for the model's method: n x bits 0/1."""
    T = model.tensors
    H = dot_rows(X, T["encoder.weight"]) + T["encoder.bias"]
    n, N, k = len(X), model.bits, model.k
    B = np.zeros((n, N), np.uint8)
    if model.method in ("bsa", "sign", "lsh", "itq"):
        B[:] = H > 0
    elif model.method == "topk":
        # the k largest, ties to the lower j: a stable sort of -H keeps equal values in j order
        B[np.arange(n)[:, None], np.argsort(-H, axis=1, kind="stable")[:, :k]] = 1
    else:  # pursuit: the encoder is the dictionary, rows a_j of We
        A = T["encoder.weight"]
        G = dot_rows(A, A)
        gain = (2 * H - np.diag(G)).astype(np.float32)
        rows = np.arange(n)
        for _ in range(k):
            j = gain.argmax(1)  # the first of the largest: ties to the lower j
            B[rows, j] = 1
            gain[rows, j] = -np.inf
            gain -= 2 * G[j]  # -inf stays -inf: a picked j is never picked again
    return B


# ------------------------------------------------------------------ a single-segment directory

@dataclass
class Segment:
    name: str
    n: int
    bits: int
    codes: np.ndarray  # n x bits 0/1
    ids: np.ndarray  # u64
    ids_flag: bool  # flag bit 16: no ids were given
    vectors: np.ndarray = None
    norms: np.ndarray = None
    graph_level0: np.ndarray = None
    model: Model = None
    deleted: np.ndarray = None  # bool per row (segmented indexes; all False otherwise)
    bridge: np.ndarray = None  # u64 edges node << 32 | row
    bridge_to: str = None
    parts: set = field(default_factory=set)  # the file kinds read, e.g. {"codes", "sparse"}
    manifest: dict = field(default_factory=dict)


class Files:
    """The binary files of one directory, each checked against `manifest.files`."""

    def __init__(self, d, files):
        self.d, self.files, self.named, self.kinds = d, files, set(), set()

    def binary(self, name, kind) -> Binary:
        path = os.path.join(self.d, self.named_file(name))
        b = read_binary(path, kind)
        self.kinds.add(kind)
        check_file_info(path, self.files[name])
        return b

    def other(self, name) -> bytes:
        return check_file_info(os.path.join(self.d, self.named_file(name)), self.files[name])

    def named_file(self, name):
        plain(name)
        check(name in self.files, f"{name}: named in the manifest but not in `files`")
        self.named.add(name)
        return name


def read_v1(d, body, model_dims_from_root=False) -> Segment:
    check(body["words_per_code"] == (body["bits"] + 63) // 64, "manifest: words_per_code")
    check(body["incompat_features"] == [], "manifest: incompat_features")
    check(len(body["segments"]) == 1 and body["segments"][0]["rows"] == body["n"], "manifest: segments")
    check(1 <= body["n"] <= 2**32 - 1, "manifest: n")
    files = Files(d, body["files"])
    seg = read_codes_ids(files, body)
    read_vectors(files, body, seg)
    read_derived(files, body, seg)
    read_graph(files, body, seg)
    if body.get("model"):
        dims = [body["vectors"]["dim"] if body.get("vectors") else None,
                body["graph"]["dim"] if body.get("graph") else None]
        seg.model = read_model(files.other(body["model"]["file"]), seg.bits, dims)
        files.kinds.add("model")
    # Nothing listed that the reader does not know, nothing on disk the manifest does not list:
    # a new file kind must come with FORMAT.md.
    check(files.named == set(body["files"]), f"manifest.files: unknown {set(body['files']) - files.named}")
    # LOCK: the writers' lock file, which a writer opened on a single-segment index leaves.
    on_disk = set(os.listdir(d)) - {"manifest.json", "LOCK"}
    check(on_disk == set(body["files"]), f"{d}: files not in the manifest {on_disk - set(body['files'])}")
    seg.deleted = np.zeros(seg.n, bool)
    seg.parts, seg.manifest = files.kinds, body
    return seg


def read_codes_ids(files: Files, body) -> Segment:
    n, bits, entry = body["n"], body["bits"], body["segments"][0]
    b = files.binary(entry["codes"], "codes")
    check(b.header["count"] == n and b.header["width"] == bits, "codes.bin: count/width")
    codes = unpack_codes(np.frombuffer(b.payload, "<u8").reshape(n, body["words_per_code"]), bits)
    b = files.binary(entry["ids"], "ids")
    check(b.header["count"] == n, "ids.bin: count")
    ids = np.frombuffer(b.payload, "<u8")
    # This version sorts rows by id: ascending, so also unique.
    check((ids[1:] > ids[:-1]).all(), "ids.bin: not ascending")
    flag = bool(b.header["flags"] & FLAG_IDS_ROW_NUMBERS)
    check(not flag or (ids == np.arange(n, dtype=np.uint64)).all(), "ids.bin: flag 16 on ids not the row numbers")
    check(flag == (not body["build"]["ids_given"]), "ids.bin: flag 16 disagrees with build.ids_given")
    return Segment(name=os.path.basename(files.d), n=n, bits=bits, codes=codes, ids=ids, ids_flag=flag)


def read_vectors(files: Files, body, seg: Segment):
    entry, meta = body["segments"][0], body.get("vectors")
    check((entry["vectors"] is None) == (meta is None), "manifest: vectors and segments[0].vectors")
    if meta is None:
        return
    b = files.binary(entry["vectors"], "vectors")
    dtype, kind = {"f32": ("<f4", 2), "f16": ("<f2", 3)}[meta["dtype"]]
    check(b.header["elem_kind"] == kind and b.header["count"] == seg.n and b.header["width"] == meta["dim"],
          "vectors.bin: header against manifest.vectors")
    seg.vectors = np.frombuffer(b.payload, dtype).reshape(seg.n, meta["dim"])
    # f16 vectors are not checked for finiteness (older writers stored infinities).
    check(meta["dtype"] == "f16" or np.isfinite(seg.vectors).all(), "vectors.bin: not finite")


def read_derived(files: Files, body, seg: Segment):
    """norms, and the files that are functions of the codes, rebuilt byte for byte."""
    if body.get("norms"):
        b = files.binary(body["norms"]["file"], "norms")
        check(b.header["count"] == seg.n, "norms.bin: count")
        seg.norms = np.frombuffer(b.payload, "<f4")
        check(np.isfinite(seg.norms).all() and (seg.norms >= 0).all(), "norms.bin: not finite or negative")
    total = int(seg.codes.sum())
    for key, build, total_key in (("inverted", build_inverted, "postings"), ("sparse", build_sparse, "set_bits"),
                                  ("bitmaps", build_bitmaps, "set_bits")):
        if body.get(key):
            b = files.binary(body[key]["file"], key)
            check(b.header["count"] == seg.n and b.header["width"] == seg.bits, f"{key}.bin: count/width")
            check(body[key][total_key] == total, f"manifest.{key}.{total_key}")
            check(b.payload == build(seg.codes), f"{key}.bin: not the bytes the codes imply")
    check_size_rules(seg.codes, bool(body.get("sparse")), bool(body.get("bitmaps")), bool(body.get("inverted")))


def read_graph(files: Files, body, seg: Segment):
    check(not (body.get("hnsw") and body.get("graph")), "manifest: both hnsw and graph")
    if body.get("hnsw"):
        hn = body["hnsw"]
        check(hn["graph"] == hn["basename"] + ".hnsw.graph" and hn["data"] == hn["basename"] + ".hnsw.data",
              "manifest.hnsw: dump names")
        files.other(hn["graph"])  # hnsw_rs's own dump: FORMAT.md does not describe it, CRC only
        files.other(hn["data"])
        gfile, params = hn.get("native"), hn["params"]
        check(gfile == "graph.bin", "manifest.hnsw.native")  # this version writes it
    elif body.get("graph"):
        g = body["graph"]
        check(g["metric"] == "cosine" and g["file"] == "graph.bin", "manifest.graph")
        gfile, params = g["file"], g["params"]
    else:
        return
    seg.graph_level0 = parse_graph(files.binary(gfile, "graph"), seg.n, params["max_connections"])


# ------------------------------------------------------------------ a segmented directory

TEMPLATE_KEYS = ("vectors", "norms", "inverted", "graph")


def read_v2(d, body):
    check(set(body["incompat_features"]) <= {"deletes"}, "root: incompat_features")
    model = read_root_model(d, body)
    names = [s["name"] for s in body["segments"]]
    segments = [read_segment(d, body, s, names) for s in body["segments"]]
    for seg in segments:
        seg.model = model
    check_root_listing(d, body)
    every = np.concatenate([s.ids for s in segments])
    live = np.concatenate([s.ids[~s.deleted] for s in segments])
    check(len(np.unique(live)) == len(live), "root: live ids not unique over segments")
    check(int(every.max()) < body["next_id"], "root: next_id not past every id")
    return model, segments


def check_root_listing(d, body):
    """After a commit the root holds what its manifest names, the manifest and perhaps LOCK:
    writers remove every other entry of their kinds (and the test's indexes hold no user files)."""
    named = {"manifest.json"} | {s["name"] for s in body["segments"]}
    named |= {s[k]["file"] for s in body["segments"] for k in ("deletes", "bridge") if s.get(k)}
    if body.get("model"):
        named.add(body["model"]["file"])
    on_disk = set(os.listdir(d)) - {"LOCK"}
    check(on_disk == named, f"root: entries {sorted(on_disk ^ named)} against the manifest")


def read_root_model(d, body):
    if not body.get("model"):
        return None
    t = body["template"]
    dims = [t["vectors"]["dim"] if t["vectors"] else None,
            t["graph"]["on"].get("dim") if t["graph"] and t["graph"]["on"]["kind"] == "vectors" else None]
    b = check_file_info(os.path.join(d, plain(body["model"]["file"])), body["model"]["info"])
    return read_model(b, body["bits"], dims)


def read_segment(d, body, entry, names) -> Segment:
    name = plain(entry["name"])
    if name.startswith("seg-") and name[4:].isdigit():
        check(int(name[4:]) < body["next_segment"], f"root: {name} at or past next_segment")
    check(1 <= entry["rows"] <= 2**32 - 1, f"root: {name} rows")
    sd = os.path.join(d, name)
    sbody = read_manifest(sd, 1)
    seg = read_v1(sd, sbody)
    check(sbody["n"] == entry["rows"] and sbody["bits"] == body["bits"], f"{name}: n/bits against the root")
    check_template(name, body, sbody)
    seg.deleted = read_deletes(d, entry)
    if entry["deletes"]:
        seg.parts.add("deletes")
    read_bridge(d, body, entry, names, seg)
    return seg


def check_template(name, root, sbody):
    """A segment holds what the template says beside codes and ids, and no other part."""
    t = root["template"]
    v = sbody.get("vectors")
    check(t["vectors"] == (v and {"dim": v["dim"], "dtype": v["dtype"]}), f"{name}: vectors against template")
    check(t["norms"] == bool(sbody.get("norms")) and t["inverted"] == bool(sbody.get("inverted")),
          f"{name}: norms/inverted against template")
    g = t["graph"]
    if g is None:
        check(not sbody.get("graph") and not sbody.get("hnsw"), f"{name}: a graph the template lacks")
    elif g["on"]["kind"] == "codes":
        check(bool(sbody.get("hnsw")) and not sbody.get("graph"), f"{name}: graph on codes")
    else:
        check(bool(sbody.get("graph")) and sbody["graph"]["dim"] == g["on"]["dim"], f"{name}: graph on vectors")


def read_deletes(d, entry) -> np.ndarray:
    rows, de = entry["rows"], entry["deletes"]
    if de is None:
        return np.zeros(rows, bool)
    path = os.path.join(d, plain(de["file"]))
    b = read_binary(path, "deletes")
    check_file_info(path, de["info"])
    check(b.header["count"] == (rows + 63) // 64 and b.header["width"] == 64, f"{de['file']}: count")
    bits = np.unpackbits(np.frombuffer(b.payload, np.uint8), bitorder="little")
    check(not bits[rows:].any(), f"{de['file']}: bits at or past rows")
    check(int(bits.sum()) == de["deleted"], f"{de['file']}: set bits != deleted")
    return bits[:rows].astype(bool)


def read_bridge(d, body, entry, names, seg: Segment):
    br = entry.get("bridge")
    if br is None:
        return
    # Bridges exist only where segments hold graphs on float vectors.
    g = body["template"]["graph"]
    check(g is not None and g["on"]["kind"] == "vectors", f"{br['file']}: a bridge without a graph on vectors")
    path = os.path.join(d, plain(br["file"]))
    b = read_binary(path, "bridge")
    check_file_info(path, br["info"])
    edges = np.frombuffer(b.payload, "<u8")
    check(b.header["count"] == br["edges"] == len(edges), f"{br['file']}: edges")
    check((edges[1:] > edges[:-1]).all(), f"{br['file']}: not strictly ascending")
    check(br["to"] in names and br["to"] != entry["name"], f"{br['file']}: to {br['to']}")
    to_rows = body["segments"][names.index(br["to"])]["rows"]
    check(((edges >> np.uint64(32)) < to_rows).all(), f"{br['file']}: node past {br['to']}'s rows")
    check(((edges & np.uint64(0xFFFFFFFF)) < entry["rows"]).all(), f"{br['file']}: row past the segment's")
    seg.bridge, seg.bridge_to = edges, br["to"]
    seg.parts.add("bridge")


# ------------------------------------------------------------------ entry point

@dataclass
class Index:
    version: int
    model: Model
    segments: list

    def live(self):
        """(codes, ids) of the rows not deleted, over all segments in manifest order."""
        codes = np.concatenate([s.codes[~s.deleted] for s in self.segments])
        ids = np.concatenate([s.ids[~s.deleted] for s in self.segments])
        return codes, ids

    def deleted_ids(self):
        return np.concatenate([s.ids[s.deleted] for s in self.segments])


def read_index(d) -> Index:
    """Parses and validates the whole index directory d; raises FormatError."""
    with open(os.path.join(d, "manifest.json"), "rb") as f:
        version = json.loads(f.read()).get("format_version")
    if version == 1:
        seg = read_v1(d, read_manifest(d, 1))
        return Index(1, seg.model, [seg])
    check(version == 2, f"manifest.json: format_version {version}")
    model, segments = read_v2(d, read_manifest(d, 2))
    return Index(2, model, segments)
