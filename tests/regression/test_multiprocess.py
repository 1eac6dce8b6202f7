"""Two processes joined by jax.distributed (gloo CPU collectives) give the one-process results."""

import functools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kjax import kernels, regression
from tests.conformance import assert_close
from tests.regression._mp_data import problem

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_mp_worker.py")
TIMEOUT_S = 180  # a safety net for loaded machines (about 30 s idle), not a timing assertion


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(out_dir: Path) -> list[tuple[int, str]]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(port), "2", str(i), str(out_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              cwd=ROOT) for i in range(2)]
    deadline = time.monotonic() + TIMEOUT_S
    results = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out = p.communicate()[0]
            pytest.fail(f"multi-process worker timed out after {TIMEOUT_S} s; output:\n{out[-4000:]}")
        results.append((p.returncode, out))
    return results


def test_two_processes_match_one(tmp_path):
    results = _run_two_processes(tmp_path)
    for i, (rc, out) in enumerate(results):
        assert rc == 0, f"worker {i} exited with {rc}; output:\n{out[-4000:]}"
    res = np.load(tmp_path / "result.npz")
    assert int(res["ndev"]) == 4, "expected 2 processes x 2 CPU devices"
    assert int(res["status"]) == 0

    x, y, z = problem()
    kern = functools.partial(kernels.rbf, lengthscale=1.5)
    dense = np.asarray(kern(x)) @ y
    assert_close(res["matvec"], dense, 1e-12, "2-process kernel_matvec vs dense")
    one = regression.falkon_fit(None, kern, x, y, ridge=1e-3, ridge_scaling="n", centers=z, maxiter=60,
                                tol=1e-13, block_size=(16, 16))
    # both runs converge (tol 1e-13); predictions agree to roundoff, the (ill-conditioned)
    # coefficients to a looser tolerance
    assert_close(res["pred"], regression.falkon_predict(one, x), 1e-9, "2-process falkon predictions")
    assert_close(res["alpha"], one.alpha, 1e-5, "2-process falkon_fit coefficients")
    # krr_fit(solver="pcg") across the two processes equals the one-process Cholesky solve
    assert int(res["pcg_status"]) == 0 and float(res["pcg_residual"]) <= 1e-12
    chol = regression.krr_fit(kern, x, y, ridge=1e-2, solver="cholesky")
    assert_close(res["pcg_coef"], chol.coef, 1e-8, "2-process pcg krr_fit coefficients")

    # the dataset eNTK: each process filled the blocks of its devices; together they are the kernel
    from kjax.ntk import empirical_ntk
    from tests.regression._mp_data import entk_problem

    f, p, xe = entk_problem()
    parts = [np.load(tmp_path / f"entk{i}.npy") for i in range(2)]
    assert all(0 < np.isnan(q).mean() < 1 for q in parts), "each process writes only its own blocks"
    union = np.where(np.isnan(parts[0]), parts[1], parts[0])
    assert_close(union, np.asarray(empirical_ntk(f, p, xe)), 1e-12, "2-process eNTK vs one process")
    # issue 17 (c): the eNTK blocks gathered from both processes, then Falkon on the columns of
    # some centres as a stored kernel
    cidx = np.arange(0, xe.shape[0], 3)
    cols = np.asarray(empirical_ntk(f, p, xe))[:, cidx]
    assert np.all(res["entk_owners"] == 1), "every eNTK entry comes from exactly one process"
    assert_close(res["entk_cols"], cols, 1e-12, "gathered 2-process eNTK columns vs one process")
    fal = regression.falkon_fit(None, kernels.precomputed(cols, columns=cidx), None, np.sin(xe).sum(1),
                                ridge=1e-3, centers=cidx, maxiter=40, tol=1e-12)
    assert_close(res["entk_falkon_alpha"], fal.alpha, 1e-8, "2-process Falkon on the eNTK columns")
