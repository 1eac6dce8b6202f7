"""The reference networks of issue #14's last layers (DotGeneral, ImageResize, Aggregate,
GlobalSelfAttention), written once against a ``stax`` module (kjax's or neural-tangents').

``benchmarks/peers/nt_stax_reference3.py`` builds them with ``neural_tangents.stax`` to store the
oracle (tests/ntk/data/nt_stax_reference3.npz); ``tests/ntk/test_stax_layers3.py`` builds them
with ``kjax.ntk.stax`` and compares. Each entry: ``name -> (layer, x1 shape, x2 batch size,
kernel_fn keyword arguments)``; a ``pattern=(p1, p2)`` keyword is also given to ``apply_fn`` (as
``pattern=p1``). Graph patterns are drawn here with NumPy, so both sides see the same ones.
Shapes are tiny: these run in the default test suite.
"""

import jax.numpy as jnp
import numpy as np


def _patterns():
    rng = np.random.default_rng(314)
    dense1, dense2 = rng.uniform(size=(2, 4, 4)), rng.uniform(size=(3, 4, 4))
    # sparse edge lists [n, n_edges, K=2, (tail, head)] on a 3 x 2 grid; -1 heads are padding
    # (dropped), and one edge with a negative tail (NT wraps it to the last vertex)
    edges = rng.integers(0, 2, size=(5, 7, 2, 2))
    edges[..., 0, :] = rng.integers(0, 3, size=(5, 7, 2))
    edges[:, 5, :, 1] = -1
    edges[0, 6, :, 0] = -1
    return dense1, dense2, edges[:2].astype(np.int32), edges[2:].astype(np.int32)


def dense_of_edges(edges, grid):
    """NT's SPARSE edge lists ``[n, E, K, 2]`` as dense adjacencies ``[n, *grid, *grid]``: a head
    with a negative coordinate drops the edge; a negative tail is the last vertex (NumPy's wrap,
    as NT's ``inputs[senders]`` does)."""
    V = int(np.prod(grid))
    out = np.zeros((edges.shape[0], V, V))
    for n in range(edges.shape[0]):
        for t, h in zip(edges[n, :, :, 0], edges[n, :, :, 1], strict=True):
            if (h < 0).any():
                continue
            ti = V - 1 if (t < 0).any() else int(np.ravel_multi_index(tuple(t), grid))
            out[n, ti, int(np.ravel_multi_index(tuple(h), grid))] += 1.0
    return out.reshape((edges.shape[0], *grid, *grid))


def architectures(stax):
    W, b = 1.5, 0.2
    dense1, dense2, sparse1, sparse2 = _patterns()
    mix = np.array([[1.0, -0.5, 0.25], [0.5, 2.0, -1.0]])  # [2, 3]: contracts an H of 3
    return {
        # rhs contracting a spatial axis: the channels move to axis 2 of [n, W, C, 2]
        "dot_rhs": (stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=W, b_std=b), stax.Relu(),
                                stax.DotGeneral(rhs=mix.T, dimension_numbers=(((1,), (0,)), ((), ()))),
                                stax.Dense(3, W_std=W, b_std=b, channel_axis=2), stax.Relu(),
                                stax.GlobalAvgPool(channel_axis=2), stax.Dense(1, W_std=W)),
                    (2, 3, 4, 2), 3, {}),
        # lhs: output [2, n, W, C] (batch on axis 1), then a batch dimension of its own
        "dot_lhs": (stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=W, b_std=b), stax.Erf(),
                                stax.DotGeneral(lhs=mix, dimension_numbers=(((1,), (1,)), ((), ()))),
                                stax.Dense(2, W_std=W, b_std=b, batch_axis=1, channel_axis=3),
                                stax.Relu(), stax.Flatten(batch_axis=1), stax.Dense(1, W_std=W)),
                    (2, 3, 4, 2), 3, {}),
        # the batch axis as a dot_general batch dimension (one constant slice per example) and a
        # scalar, on the spatial diagonal (no spatial contraction)
        "dot_batch_diag": (stax.serial(stax.Conv(3, (2,), padding="SAME", W_std=W, b_std=b),
                                       stax.Relu(),
                                       stax.DotGeneral(rhs=np.array([[1.0, -2.0], [0.5, 3.0]]),
                                                       dimension_numbers=(((), ()), ((0,), (0,)))),
                                       stax.Dense(2, W_std=W, channel_axis=2), stax.Relu(),
                                       stax.DotGeneral(lhs=0.7, channel_axis=2), stax.Flatten()),
                           (2, 4, 2), 2, {"diagonal_spatial": True, "diagonal_batch": False}),
        # (NT resizes the wrong axes after a 2D Conv, whose kernels it stores with the spatial
        # axes reversed; a Dense before the resize avoids that)
        "resize_linear": (stax.serial(stax.Dense(3, W_std=W, b_std=b), stax.Relu(), stax.ImageResize((-1, 5, 3, -1), "linear"),
                                      stax.Conv(2, (2, 2), W_std=W, b_std=b), stax.Relu(),
                                      stax.GlobalAvgPool(), stax.Dense(1, W_std=W)),
                          (2, 3, 4, 2), 2, {}),
        "resize_nearest": (stax.serial(stax.Conv(3, (2,), padding="SAME", W_std=W, b_std=b),
                                       stax.Relu(), stax.ImageResize((-1, 7, -1), "nearest"),
                                       stax.Dense(2, W_std=W, b_std=b)),
                           (2, 4, 2), 2, {"diagonal_batch": False}),
        "agg_dense": (stax.serial(stax.Dense(3, W_std=W, b_std=b), stax.Relu(), stax.Aggregate(),
                                  stax.Dense(3, W_std=W, b_std=b), stax.Relu(),
                                  stax.GlobalSumPool(), stax.Dense(1, W_std=W)),
                      (2, 4, 3), 3, {"pattern": (dense1, dense2)}),
        # (NT's SPARSE kernel is wrong after a 2D Conv, which stores reversed spatial axes;
        # a Dense before it avoids that, and "agg_dense_2d" has the Conv with the same graphs)
        "agg_sparse": (stax.serial(stax.Dense(3, W_std=W, b_std=b),
                                   stax.Aggregate(aggregate_axis=(1, 2), implementation="SPARSE"),
                                   stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1, W_std=W)),
                       (2, 3, 2, 2), 3, {"pattern": (sparse1, sparse2)}),
        "agg_dense_2d": (stax.serial(stax.Conv(3, (2, 1), padding="SAME", W_std=W, b_std=b),
                                     stax.Aggregate(aggregate_axis=(2, 1)), stax.Relu(),
                                     stax.GlobalAvgPool(), stax.Dense(1, W_std=W)),
                         (2, 3, 2, 2), 3, {"pattern": (dense_of_edges(sparse1, (3, 2)),
                                                       dense_of_edges(sparse2, (3, 2)))}),
        "attn_softmax": (stax.serial(stax.Dense(4, W_std=W, b_std=b),
                                     stax.GlobalSelfAttention(4, 3, 3, 2, W_key_std=1.2,
                                                              W_query_std=0.8, b_std=b),
                                     stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1, W_std=W)),
                         (2, 3, 2), 2, {}),
        # positional embeddings with a decay, concatenated, also on the values
        "attn_pos_relu": (stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=W, b_std=b),
                                      stax.GlobalSelfAttention(
                                          3, 2, 2, 3, attention_mechanism="RELU",
                                          pos_emb_type="CONCAT", pos_emb_p_norm=1,
                                          pos_emb_decay_fn=lambda d: jnp.exp(-d / 2),
                                          n_chan_pos_emb=2, W_pos_emb_std=0.9, val_pos_emb=True),
                                      stax.Erf(), stax.Flatten(), stax.Dense(1, W_std=W)),
                          (2, 2, 3, 2), 2, {}),
        # square-root scaling: only IDENTITY has a kernel; one-hot embeddings summed; channels on
        # axis 1
        "attn_identity": (stax.serial(stax.Dense(3, W_std=W, b_std=b, channel_axis=1),
                                      stax.GlobalSelfAttention(
                                          3, 2, 2, 2, linear_scaling=False,
                                          attention_mechanism="IDENTITY", pos_emb_type="SUM",
                                          W_pos_emb_std=0.5, b_std=b, channel_axis=1),
                                      stax.Relu(), stax.GlobalAvgPool(channel_axis=1),
                                      stax.Dense(1, W_std=W)),
                          (2, 3, 4), 2, {}),
        # square-root scaling with embeddings (a 1 / (1 + d) decay) concatenated to the values too
        "attn_identity_concat": (stax.serial(stax.Dense(3, W_std=W),
                                             stax.GlobalSelfAttention(
                                                 3, 2, 2, 2, linear_scaling=False,
                                                 attention_mechanism="IDENTITY",
                                                 pos_emb_type="CONCAT", val_pos_emb=True,
                                                 n_chan_pos_emb=4,
                                                 pos_emb_decay_fn=lambda d: 1 / (1 + d), b_std=b)),
                                 (2, 3, 2, 2), 2, {}),
        "attn_abs_sum": (stax.serial(stax.Dense(3, W_std=W),
                                     stax.GlobalSelfAttention(3, 2, 2, 2, attention_mechanism="ABS",
                                                              pos_emb_type="SUM"),
                                     stax.Abs(), stax.GlobalAvgPool()),
                         (2, 4, 3), 2, {}),
    }
