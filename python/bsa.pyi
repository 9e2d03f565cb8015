"""bsa: sparse binary codes for dense embeddings, and their search (type stubs).

The implementation is the Rust extension module; see ``help(bsa)`` and each function's
docstring for details and examples.
"""

from os import PathLike
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple, Union, final

import numpy as np
import numpy.typing as npt

__all__ = ["__version__", "FormatError", "Model", "Index", "train", "groundtruth", "recall"]

__version__: str

_Path = Union[str, "PathLike[str]"]
_Floats = npt.ArrayLike  # 2-D float array (float32 read in place; float16/float64 converted)
_Codes = npt.NDArray[np.uint8]  # 2-D packed codes, numpy.packbits(bitorder="little") rows
_Score = Literal["hamming", "cosine", "jaccard", "overlap", "adc", "soft"]
_Mode = Literal["flat", "inverted", "hnsw"]

class FormatError(ValueError):
    """A damaged, truncated or foreign index or model file (the message names it)."""

@final  # the extension's classes cannot be subclassed
class Model:
    """A trained model: encodes float vectors into sparse binary codes and decodes them.

    Example::

        model = bsa.train(x, preset="retrieval")
        codes = model.encode(x)        # uint8 (n, ceil(bits / 8))
        xhat = model.decode(codes)     # float32 (n, dim)
    """

    @staticmethod
    def load(path: _Path) -> Model:
        """Loads a model file written by ``Model.save`` or ``bsa train``."""
    def save(self, path: _Path) -> None:
        """Writes the model as a safetensors file (the same file as ``bsa train``)."""
    def to_bytes(self) -> bytes:
        """The model file's bytes (what ``save`` writes); pickling uses them."""
    @staticmethod
    def from_bytes(data: bytes | bytearray | memoryview) -> Model:
        """Reads a model from the bytes of a model file, with the checks of ``load``."""
    def encode(self, x: _Floats, *, threads: Optional[int] = None) -> npt.NDArray[np.uint8]:
        """Packed codes of the rows of ``x``: uint8 (n, ceil(bits / 8)), little bit order.

        Ctrl-C stops the encoding of a large batch (``KeyboardInterrupt``)."""
    def decode(self, codes: _Codes) -> npt.NDArray[np.float32]:
        """The vectors the decoder rebuilds from packed codes: float32 (n, dim)."""
    def eval(self, x: _Floats, *, threads: Optional[int] = None) -> dict[str, Any]:
        """The paper's metrics on ``x`` (the keys of ``bsa eval --json``)."""
    @property
    def bits(self) -> int:
        """Code length N."""
    @property
    def k(self) -> int:
        """Target number of set bits K."""
    @property
    def dim(self) -> int:
        """Input dimension."""
    @property
    def method(self) -> str:
        """bsa, topk, sign, lsh, itq or pursuit."""
    @property
    def training(self) -> dict[str, Any]:
        """The training settings and report saved with the model."""

def train(
    x: _Floats,
    preset: Optional[Literal["retrieval"]] = None,
    *,
    method: Optional[Literal["bsa", "topk", "sign", "lsh", "itq", "pursuit"]] = None,
    bits: Optional[int] = None,
    k: Optional[int] = None,
    seed: int = 0,
    threads: Optional[int] = None,
    progress: bool = True,
    epochs: Optional[int] = None,  # bsa, topk: 10
    batch: Optional[int] = None,  # bsa, topk: 1024
    lr: Optional[float] = None,  # bsa, topk: 1e-3
    alpha: Optional[float] = None,  # bsa, topk (no effect there): 1.0
    loss: Optional[Literal["cosine", "mse"]] = None,  # bsa, topk: "cosine"
    target: Optional[Literal["khot", "masked"]] = None,  # bsa, topk (no effect there): "khot"
    val_fraction: Optional[float] = None,  # bsa, topk: 0.05
    rounds: Optional[int] = None,  # pursuit: 6
    ridge: Optional[float] = None,  # pursuit: 1e-3
    fit_rows: Optional[int] = None,  # sign, lsh, itq: 20,000; pursuit: every row
    itq_iterations: Optional[int] = None,  # itq: 50
) -> Model:
    """Trains a model on the rows of ``x`` (as ``bsa train``); the GIL is released.

    A setting the method does not read (e.g. ``epochs`` with ``method="itq"``) raises
    ``ValueError``, but for ``alpha`` and ``target`` with ``method="topk"``, accepted with no
    effect (as ``bsa train --method topk --alpha``); a setting left out takes the default in
    the comment beside it. Ctrl-C
    stops a fit within about a second (at most a pursuit round's refit later).

    Example::

        model = bsa.train(x, preset="retrieval")             # pursuit, N = 4096, K = 32
        model = bsa.train(x, bits=1024, k=32, epochs=10)     # the paper's BSA
        model = bsa.train(x, method="itq", bits=256)
    """

@final
class Index:
    """Packed codes in ``bsa build``'s on-disk format, memory-mapped, searched in place (a
    large batch of Hamming queries adds, once, an in-memory copy of the codes as large as them,
    transposed for counting many rows at once).

    Example::

        index = bsa.Index.build(x=base, model=model, vectors=True)
        D, I = index.search(queries, 10, score="adc", rescore=4)
        index.save("idx")                  # bsa search --index idx ... reads it
        index = bsa.Index.open("idx")
        with bsa.Index.build(codes=codes) as index:   # its temporary folder removed at the end
            D, I = index.search(query_codes, 10)
    """

    @staticmethod
    def open(path: _Path, *, verify: bool = True) -> Index:
        """Opens an index directory written by ``bsa build`` or ``Index.save``, its checksums
        verified, each file's before a search first reads it (the stored vectors at the first
        ``rescore``, the posting lists at the first ``mode="inverted"``); ``verify=False``
        skips that."""
    @staticmethod
    def build(
        codes: Optional[_Codes] = None,
        x: Optional[_Floats] = None,
        model: Optional[Model] = None,
        ids: Optional[npt.ArrayLike] = None,
        vectors: bool = False,
        hnsw: bool = False,
        *,
        bits: Optional[int] = None,
        f16: bool = False,
        inverted: Optional[bool] = None,
        bitmaps: Optional[bool] = None,
        m: Optional[int] = None,
        ef_construction: Optional[int] = None,
        ef_search: Optional[int] = None,
        hnsw_on: Literal["decoded", "data", "codes"] | None = None,
        path: Optional[_Path] = None,
        overwrite: bool = False,
        threads: Optional[int] = None,
        lock_timeout: Optional[float] = None,
    ) -> Index:
        """Builds an index from ``codes``, or from ``x`` encoded with ``model`` (as ``bsa build``).

        ``inverted`` and ``bitmaps``: ``None`` stores posting lists (and their bitmaps) when
        they pay off, except for a pursuit model's codes (searched with ``score="adc"``, which
        does not read them); ``True`` always, ``False`` never.

        Ctrl-C stops it within about a second (``KeyboardInterrupt``), leaving nothing at
        ``path``; an index it would have replaced stays as it was. A Ctrl-C that comes once
        the new index is being put in place does not stop it: the call returns, with a
        ``UserWarning`` saying so (a ``KeyboardInterrupt`` means nothing was replaced).
        ``overwrite`` replaces only an index holding nothing but bsa's files (else
        ``FileExistsError`` names the rest), after
        its writers: they are waited for, at most ``lock_timeout`` seconds if given (then
        ``TimeoutError``, the old index kept).
        """
    def save(
        self, path: _Path, *, overwrite: bool = False, lock_timeout: Optional[float] = None
    ) -> None:
        """Copies the generation this object searches (once changes of this process to the
        index in other threads, which may move it, are done) to the directory ``path`` (atomically;
        ``overwrite`` replaces an index there (one holding nothing but bsa's files), after its
        writers: at most ``lock_timeout``
        seconds if given, then ``TimeoutError``). Ctrl-C stops it, leaving ``path`` as it was;
        one that comes once the copy is being put in place lets the call return, with a
        ``UserWarning``."""
    def search(
        self,
        q: Union[_Floats, _Codes],
        k: Optional[int] = 10,
        *,
        score: Optional[_Score] = None,
        mode: _Mode = "flat",
        rescore: Optional[int] = None,
        ef: Optional[int] = None,
        max_distance: Optional[int] = None,
        min_score: Optional[float] = None,
        allow_ids: Optional[npt.ArrayLike] = None,
        deny_ids: Optional[npt.ArrayLike] = None,
        threads: Optional[int] = None,
    ) -> Tuple[Union[npt.NDArray[np.int32], npt.NDArray[np.float32]], npt.NDArray[np.int64]]:
        """``(D, I)`` of shape (nq, k), best first, as ``bsa search``.

        ``score``: ``None`` ranks by Hamming distance, as ``"hamming"`` does, but warns
        (``UserWarning``) when the index's codes are a pursuit model's, which rank well only
        with ``"adc"``. ``I``: int64 ids, -1 where missing. ``D``: int32 Hamming distances for
        ``score="hamming"`` (or ``None``) without rescoring (missing: 2**31 - 1), else float32 scores,
        higher is better (missing: -inf). ``allow_ids`` / ``deny_ids`` restrict the ids
        returned (exact modes stay exact); ``min_score`` drops hits scoring less (with
        ``rescore``, by ``score``'s exact value; ``D`` then holds cosines, which may be below
        it). With ``rescore``, ``adc`` picks its candidates with 8-bit integer tables. Ctrl-C
        stops a large batch of queries (``KeyboardInterrupt``).
        """
    def add(
        self,
        x: Optional[_Floats] = None,
        codes: Optional[_Codes] = None,
        ids: Optional[npt.ArrayLike] = None,
        *,
        upsert: bool = False,
        merge_factor: int = 2,
        threads: Optional[int] = None,
        verify: bool = True,
        lock_timeout: Optional[float] = None,
    ) -> int:
        """Adds rows as a new segment (as ``bsa add``), merging ``merge_factor`` segments of one
        size tier (tiers ``merge_factor`` times apart) in the same commit (0: never); returns
        the number of rows replaced. An empty batch adds nothing and returns 0.
        Ctrl-C stops it before its commit (the index stays as it was: a ``KeyboardInterrupt``
        always means that); one that comes after it lets the call return, with a
        ``UserWarning``, so that a retry does not add the rows twice. The index's checksums
        are checked first (a damaged index raises ``FormatError``); ``verify=False`` skips.
        Another writer of the index is waited for, at most ``lock_timeout`` seconds if given
        (then ``TimeoutError``, nothing changed; 0: no wait)."""
    def delete(
        self, ids: npt.ArrayLike, *, verify: bool = True, lock_timeout: Optional[float] = None
    ) -> int:
        """Marks the rows holding ``ids`` deleted (as ``bsa delete``); returns how many. The
        index's checksums are checked first, other writers waited for, and Ctrl-C heeded, as in
        ``add``."""
    def compact(
        self,
        max_segments: int = 1,
        *,
        threads: Optional[int] = None,
        verify: bool = True,
        lock_timeout: Optional[float] = None,
    ) -> None:
        """Merges segments and drops deleted rows (as ``bsa compact``); Ctrl-C stops it before
        its commit, as in ``add``. The index's checksums are checked first, and other writers
        waited for, as in ``add``."""
    @property
    def segments(self) -> int:
        """Number of segments."""
    def refresh(self) -> bool:
        """Moves to the index's current generation if another writer committed since this
        object opened its own (returns whether it did); shares the segments both hold, and
        checks new ones as ``open`` does (``FormatError`` names a damaged file)."""
    def verify(self) -> None:
        """Checks every checksum of every file and the values checksums cannot vouch for (raises
        ``FormatError``)."""
    def info(self) -> Dict[str, Any]:
        """What the index holds and its bytes on disk (``bsa info --json``'s summary):
        ``rows``, ``live_rows``, ``next_id``, ``segments``, ``bytes``, ``total_bytes``, ..."""
    def __len__(self) -> int: ...
    @property
    def bits(self) -> int:
        """Bits per code."""
    @property
    def path(self) -> Path:
        """The index directory (``pathlib.Path``)."""
    @property
    def model(self) -> Optional[Model]:
        """The model stored in the index, if any."""
    @property
    def ids(self) -> npt.NDArray[np.int64]:
        """External ids of the live rows: segment by segment, and in increasing order within a
        segment (a build stores its rows sorted by id), not in the order they were given."""
    @property
    def has_vectors(self) -> bool: ...
    @property
    def has_inverted(self) -> bool: ...
    @property
    def has_hnsw(self) -> bool: ...
    def close(self) -> None:
        """Closes the index: later calls raise ``ValueError``, and the folder of an index built
        without ``path`` is removed now. ``with`` closes it at the end of its block."""
    def __enter__(self) -> Index: ...
    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> Literal[False]: ...

def groundtruth(
    base: _Floats, queries: _Floats, k: int = 100, *, threads: Optional[int] = None
) -> npt.NDArray[np.int64]:
    """Exact cosine top-``k`` rows of ``base`` per query: int64 (nq, k), as ``bsa groundtruth``
    (-1 past the last row when ``base`` has fewer than ``k``, as search results are padded).

    Ctrl-C stops it (``KeyboardInterrupt``)."""

def recall(I: npt.ArrayLike, gt: npt.ArrayLike, k: int) -> float:
    """Recall@k of search results ``I`` against ground truth ``gt`` (-1 entries are misses)."""
