"""Demo section: an S4D filter applied three ways (FFT, recurrence, direct convolution) must agree."""

from __future__ import annotations

TITLE = "kjax.ssm: an S4D long convolution by FFT, by recurrence and directly, in float32"


def run() -> bool:
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from kjax import ssm
    from kjax.ssm._xla import fft_size

    B, L, D, N = 2, 2048, 8, 64
    params = ssm.init_s4d(jax.random.key(0), D, N, init="legs")
    k = ssm.s4d_filter(params, L)
    u = jax.random.normal(jax.random.key(1), (B, L, D), jnp.float32)

    conv = jax.jit(ssm.fftconv)
    y = conv(u, k).block_until_ready()
    t0 = time.perf_counter()
    conv(u, k).block_until_ready()
    t_fft = time.perf_counter() - t0

    def body(state, u_t):
        y_t, state = ssm.s4d_step(params, state, u_t)
        return state, y_t

    _, ys = jax.jit(lambda u: jax.lax.scan(body, ssm.s4d_initial_state(params, B), jnp.swapaxes(u, 0, 1)))(u)
    ys = jnp.swapaxes(ys, 0, 1)

    un, kn = np.asarray(u, np.float64), np.asarray(k, np.float64)
    direct = np.stack([np.stack([np.convolve(un[b, :, d], kn[:, d])[:L] for d in range(D)], -1)
                       for b in range(B)])
    rel = lambda a, b: float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))
    e_step, e_direct = rel(ys, direct), rel(y, direct)
    print(f"S4D-LegS filter: D={D} channels, state N={N}, length L={L}; input [B, L, D] = {u.shape}")
    print(f"fftconv (XLA, rfft length {fft_size('causal', L, L)}): {1e3 * t_fft:.2f} ms")
    print(f"relative error vs float64 direct convolution: fftconv {e_direct:.2e}, "
          f"recurrent s4d_step scan {e_step:.2e}")
    return e_direct < 1e-5 and e_step < 1e-4
