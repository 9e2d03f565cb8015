"""Shared fixtures: the bundled sample, the `bsa` binary, and a model and index made by the CLI."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "bench-data"
# Queries used by the comparisons: enough for ties and every code path, quick on the sample.
NQ = 200


def pytest_configure(config):
    # The fixture's index holds pursuit codes, which most tests search by the default score to
    # compare with the CLI's default: its warning is asserted once
    # (test_default_score_on_pursuit_codes_warns), not repeated for each of them.
    config.addinivalue_line("filterwarnings", "ignore:ranked by Hamming distance:UserWarning")


def bsa_binary() -> Path:
    """The `bsa` binary built from this checkout: $BSA_BIN, else the release build, else the
    debug build (their outputs are the same bytes: every sum has a fixed order)."""
    if os.environ.get("BSA_BIN"):
        return Path(os.environ["BSA_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ("release", "debug"):
        p = target / profile / "bsa"
        if p.exists():
            return p
    pytest.fail(
        "no bsa binary: run `cargo build --release --bin bsa` in the repository root, or set BSA_BIN"
    )


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    """Runs `bsa ARGS...`, failing the test with its stderr if it fails."""
    p = subprocess.run([str(bsa_binary()), *map(str, args)], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        pytest.fail(f"bsa {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
    return p


def cli_search(index, queries_file, k, *extra):
    """`bsa search` as (ids, distances, scores) lists of lists, one per query."""
    out = subprocess.run(
        [str(bsa_binary()), "search", "--index", str(index), *queries_file, "--k", str(k), *map(str, extra)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.fail(f"bsa search failed:\n{out.stderr}")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    return (
        [line["ids"] for line in lines],
        [line["distances"] for line in lines],
        [line.get("scores") for line in lines],
    )


@pytest.fixture(scope="session")
def base():
    return np.load(DATA / "base.npy")


@pytest.fixture(scope="session")
def queries():
    return np.load(DATA / "query.npy")[:NQ]


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    """A directory with the query subset, a small pursuit model and an index, all made by the
    CLI: sparse codes (so posting lists pay off), vectors for rescoring, an HNSW graph."""
    d = tmp_path_factory.mktemp("cli")
    np.save(d / "query.npy", np.load(DATA / "query.npy")[:NQ])
    run_cli(
        "train", "--data", DATA / "base.npy", "--method", "pursuit", "--bits", 512, "--k", 16,
        "--rounds", 2, "--threads", 2, "--quiet", "--out", d / "model.safetensors",
    )
    run_cli(
        "build", "--model", d / "model.safetensors", "--data", DATA / "base.npy", "--vectors",
        "--hnsw", "--hnsw-on", "codes", "--inverted", "--quiet", "--out", d / "idx",
    )
    run_cli("encode", "--model", d / "model.safetensors", "--data", d / "query.npy", "--out", d / "qcodes.npy")
    return d
