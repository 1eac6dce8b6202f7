"""Linear attention is a fast-weight programmer; the delta rule stores more associations.

Claims (Schlag, Irie & Schmidhuber, *Linear Transformers Are Secretly Fast Weight Programmers*,
ICML 2021):

1. (sec. 2) Unnormalised causal linear attention equals the sum-rule fast-weight programmer
   ``W_t = W_{t-1} + v_t phi(k_t)^T``, ``o_t = W_t phi(q_t)``.
2. (sec. 4.2, 6.1, setting 2) On associative retrieval where keys are written again with new
   values, the delta rule ``W_t = W_{t-1} + beta_t (v_t - W_{t-1} phi(k_t)) phi(k_t)^T`` retrieves
   more of the current key-value pairs than the sum rule, which can only add values up.
   (With distinct keys written once, the sum rule does as well or better: the delta rule with
   beta=1 favours recent writes; this experiment measures the setting of the claim.)

    .venv/bin/python experiments/fast_weights.py

Prints the error of claim 1, the retrieval accuracy table for claim 2, whether each claim held,
and saves experiments/figures/fast_weights.png.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from kjax.attention import delta_rule_attention, dpfp, linear_attention

D_KEY = 8  # raw key size; DPFP (nu=2) maps it to 32 features
NU = 2
DV = 32
N_LIST = [4, 8, 16, 24, 32]
TRIALS = 50


def features(k):
    phi = dpfp(k, nu=NU)
    return phi / jnp.linalg.norm(phi, axis=-1, keepdims=True)


def claim1():
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    t, m = 50, 2 * D_KEY * NU
    q = features(jax.random.normal(kq, (1, t, 1, D_KEY)))
    k = features(jax.random.normal(kk, (1, t, 1, D_KEY)))
    v = jax.random.normal(kv, (1, t, 1, DV))
    la = linear_attention(q, k, v, normalize=False, chunk_size=16)
    w = np.zeros((DV, m))
    fw = []
    for i in range(t):  # the fast-weight programmer, written out
        w += np.outer(v[0, i, 0], k[0, i, 0])
        fw.append(w @ np.asarray(q[0, i, 0]))
    err = float(np.linalg.norm(np.asarray(la[0, :, 0]) - np.array(fw)) / np.linalg.norm(np.array(fw)))
    return err


@functools.partial(jax.jit, static_argnums=0)
def retrieval_accuracy(n, key):
    """n distinct keys; 4n writes (each key first once, then 3n writes of random keys with fresh
    values, so most keys are overwritten); then read every key back: correct if the nearest (cosine)
    of the n current values is the one last written with that key."""
    kk, kv, ks = jax.random.split(key, 3)
    keys = features(jax.random.normal(kk, (n, D_KEY)))
    order = jnp.concatenate([jnp.arange(n), jax.random.randint(ks, (3 * n,), 0, n)])
    vals = jax.random.normal(kv, (4 * n, DV))
    seq_k = keys[order][None, :, None]
    seq_v = vals[None, :, None]
    # the value each key holds at the end: its last write
    written = order[None, :] == jnp.arange(n)[:, None]
    last = jnp.max(jnp.where(written, jnp.arange(4 * n)[None, :], -1), axis=1)
    current = vals[last]
    _, s_sum = linear_attention(seq_k, seq_k, seq_v, normalize=False, return_state=True)
    _, s_delta = delta_rule_attention(seq_k, seq_k, seq_v, jnp.ones((1, 4 * n, 1)), return_state=True)
    accs = []
    for s in (s_sum.kv, s_delta.kv):
        read = keys @ s[0, 0]
        sim = read @ current.T / jnp.linalg.norm(current, axis=-1)
        accs.append(jnp.mean(jnp.argmax(sim, axis=1) == jnp.arange(n)))
    return jnp.stack(accs)


def main():
    err = claim1()
    held1 = err < 1e-10
    print(f"claim 1: unnormalised linear attention vs the sum-rule fast-weight loop, "
          f"relative error {err:.1e}: "
          f"{'HELD' if held1 else 'DID NOT HOLD'}")
    m = 2 * D_KEY * NU
    print(f"\nassociative retrieval with updates: N keys = normalised DPFP(nu={NU}) features of {D_KEY}-d "
          f"Gaussians (M={m}), 4N writes of fresh {DV}-d Gaussian values (every key written first, then "
          f"overwritten at random), beta=1, {TRIALS} trials; accuracy of reading each key's current value")
    print("keys N    sum rule   delta rule")
    acc = {}
    for n in N_LIST:
        trials = jax.random.split(jax.random.key(n), TRIALS)
        a = np.asarray(jax.vmap(lambda k, n=n: retrieval_accuracy(n, k))(trials)).mean(0)
        acc[n] = a
        print(f"{n:<9} {a[0]:>8.3f} {a[1]:>12.3f}")
    held2 = all(acc[n][1] > acc[n][0] for n in N_LIST)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(N_LIST, [acc[n][0] for n in N_LIST], "o-", label="sum rule (linear attention)")
        ax.plot(N_LIST, [acc[n][1] for n in N_LIST], "s-", label="delta rule")
        ax.set(xlabel="distinct keys N (4N writes)", ylabel="retrieval accuracy",
               title="associative retrieval")
        ax.legend()
        fig.tight_layout()
        out = os.path.join(os.path.dirname(__file__), "figures", "fast_weights.png")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        fig.savefig(out, dpi=90)
        print(f"figure: {out}")
    except ImportError:
        print("matplotlib not installed: no figure")
    print("claim 2 (with overwrites, the delta rule retrieves more current pairs than the sum rule "
          "at every N): "
          f"{'HELD' if held2 else 'DID NOT HOLD'}")
    return held1 and held2


if __name__ == "__main__":
    main()
