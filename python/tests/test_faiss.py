"""Hamming search equals FAISS's IndexBinaryFlat."""

import numpy as np
import pytest

import bsa

faiss = pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install faiss-cpu)")


@pytest.mark.parametrize("nbytes", [8, 48, 64])
def test_hamming_equals_faiss_binary_flat(base, queries, nbytes):
    # Sign bits of random projections: dense codes with many ties, in FAISS's bit layout.
    rng = np.random.default_rng(nbytes)
    proj = rng.standard_normal((base.shape[1], nbytes * 8)).astype(np.float32)
    codes = np.packbits(base @ proj > 0, axis=1, bitorder="little")
    qcodes = np.packbits(queries @ proj > 0, axis=1, bitorder="little")
    k = 50

    ref = faiss.IndexBinaryFlat(nbytes * 8)
    ref.add(codes)
    Df, If = ref.search(qcodes, k)

    index = bsa.Index.build(codes=codes)
    D, I = index.search(qcodes, k)
    assert D.dtype == Df.dtype == np.int32 and I.dtype == If.dtype == np.int64
    np.testing.assert_array_equal(D, Df)  # every rank
    # The ids may differ among equal distances only: check each one's true distance.
    bits = np.unpackbits(codes, axis=1, bitorder="little")
    qbits = np.unpackbits(qcodes, axis=1, bitorder="little")
    for i in range(len(qcodes)):
        true = (bits[I[i]] != qbits[i]).sum(axis=1)
        np.testing.assert_array_equal(true, D[i])
        assert len(set(I[i])) == k
        # bsa breaks ties by the smaller row.
        for a, b in zip(range(k - 1), range(1, k)):
            if D[i, a] == D[i, b]:
                assert I[i, a] < I[i, b]


def test_k_above_n_pads_like_faiss():
    codes = np.packbits(np.eye(16, dtype=bool)[:5], axis=1, bitorder="little")
    ref = faiss.IndexBinaryFlat(16)
    ref.add(codes)
    Df, If = ref.search(codes[:2], 8)
    D, I = bsa.Index.build(codes=codes).search(codes[:2], 8)
    np.testing.assert_array_equal(I, If)
    np.testing.assert_array_equal(D[:, :5], Df[:, :5])
    assert (I[:, 5:] == -1).all()
