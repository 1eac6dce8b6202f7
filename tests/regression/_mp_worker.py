"""Worker of test_multiprocess.py: one of N processes joined by jax.distributed on localhost.

Usage: python _mp_worker.py PORT NUM_PROCESSES PROCESS_ID OUT_DIR
"""

import os
import sys
import time


def main() -> None:
    # configured here, not at import: pytest's doctest collection imports this module
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, nproc, pid, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc,
                               process_id=pid, initialization_timeout=60)
    import functools

    import numpy as np
    from jax.experimental import multihost_utils

    from kjax import kernels, regression
    from tests.regression._mp_data import problem

    x, y, z = problem()
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    kern = functools.partial(kernels.rbf, lengthscale=1.5)
    mv = kernels.kernel_matvec(kern, x, None, y, block_size=(16, 32), mesh=mesh)
    st = regression.falkon_fit(None, kern, x, y, ridge=1e-3, ridge_scaling="n", centers=z, maxiter=60,
                               tol=1e-13, mesh=mesh, block_size=(16, 16))
    mv = np.asarray(multihost_utils.process_allgather(mv, tiled=True))
    alpha = np.asarray(multihost_utils.process_allgather(st.alpha, tiled=True))
    pred = regression.falkon_predict(st, x, mesh=mesh, block_size=(16, 16))
    pred = np.asarray(multihost_utils.process_allgather(pred, tiled=True))
    # full KRR by RPCholesky-preconditioned CG on the blockwise matvec split over both processes
    t0 = time.perf_counter()
    pcg = regression.krr_fit(kern, x, y, ridge=1e-2, solver="pcg", tol=1e-12, preconditioner_rank=40,
                             mesh=mesh, block_size=(16, 32))
    pcg_coef = np.asarray(multihost_utils.process_allgather(pcg.coef, tiled=True))
    t_pcg = time.perf_counter() - t0
    # the eNTK of a dataset: each process writes the blocks its devices computed (issue 17 item 5)
    from kjax.ntk import empirical_ntk
    from tests.regression._mp_data import entk_problem

    f, p, xe = entk_problem()
    rows = np.full((xe.shape[0], xe.shape[0]), np.nan)
    empirical_ntk(f, p, xe, block_size=4, mesh=mesh, out=rows)
    np.save(os.path.join(out, f"entk{pid}.npy"), rows)
    # issue 17 (c), small: the eNTK blocks split over the processes (above), gathered, and the
    # columns of some centres as a precomputed kernel for Falkon (bench_ntk_scale.py c at scale)
    cidx = np.arange(0, xe.shape[0], 3)
    have = ~np.isnan(rows)
    owners = np.asarray(multihost_utils.process_allgather(have, tiled=False)).sum(0)
    full = np.asarray(multihost_utils.process_allgather(np.where(have, rows, 0.0), tiled=False)).sum(0)
    cols = full[:, cidx]
    ye = np.sin(xe).sum(1)
    fal = regression.falkon_fit(None, kernels.precomputed(cols, columns=cidx), None, ye, ridge=1e-3,
                                centers=cidx, maxiter=40, tol=1e-12)
    if pid == 0:
        np.savez(os.path.join(out, "result.npz"), matvec=mv, alpha=alpha, pred=pred,
                 ndev=len(jax.devices()), status=int(st.status), pcg_coef=pcg_coef,
                 pcg_status=int(pcg.status), pcg_residual=float(pcg.residual),
                 entk_cols=cols, entk_owners=owners, entk_falkon_alpha=np.asarray(fal.alpha))
    print(f"process {pid}: {len(jax.devices())} global devices, done (pcg part {t_pcg:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
