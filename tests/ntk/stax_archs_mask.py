"""The reference networks of masked inputs (neural-tangents' ``mask_constant``), written once
against a ``stax`` module (kjax's or neural-tangents').

``benchmarks/peers/nt_stax_reference_mask.py`` builds them with ``neural_tangents.stax`` to store
the oracle (tests/ntk/data/nt_stax_reference_mask.npz); ``tests/ntk/test_stax_masking.py`` builds
them with ``kjax.ntk.stax`` and compares. Each entry: ``name -> (layer, x1 shape, x2 batch size,
kernel_fn keyword arguments, masked axes)``: the inputs are drawn with NumPy and entries are set
to :data:`MASK` along ``masked axes`` (all channels of a position for ``(1,)``, single entries
for ``None``) by :func:`masked_inputs`. A ``pattern=(p1, p2)`` keyword is also given to
``apply_fn`` (as ``pattern=p1``). Shapes are tiny: these run in the default test suite.
"""

import numpy as np

#: the mask constant of every network
MASK = 10.0


def masked_inputs(rng, shape, n2, how):
    """``(x1, x2)`` drawn from ``rng`` with some entries set to :data:`MASK`: trailing positions
    of the first spatial axis masked (padding of different lengths) when ``how == "pad"``, random
    positions (all channels) when ``"pos"``, random single entries when ``"entry"``."""
    out = []
    for n in (shape[0], n2):
        x = rng.standard_normal((n,) + tuple(shape[1:]))
        if how == "pad":
            for i in range(n):
                x[i, shape[1] - i % shape[1]:] = MASK  # example i has i % L padded positions
        elif how == "pos":
            m = rng.uniform(size=(n,) + tuple(shape[1:-1])) < 0.35
            x[m] = MASK
        else:
            m = rng.uniform(size=x.shape) < 0.3
            x[m] = MASK
        out.append(x)
    return out


def architectures(stax):
    W, b = 1.5, 0.2
    rng = np.random.default_rng(2718)
    adj1, adj2 = rng.uniform(size=(3, 4, 4)), rng.uniform(size=(2, 4, 4))
    mix = np.array([[1.0, -0.5, 0.0, 0.25], [0.0, 0.0, 2.0, -1.0], [0.5, 0.0, 0.0, 0.0]])
    return {
        # masked mean over the unmasked positions; Erf re-masks its kernel
        "mlp_gap": (stax.serial(stax.Dense(3, W_std=W, b_std=b), stax.Relu(),
                                stax.Dense(3, W_std=W, b_std=b), stax.Erf(),
                                stax.Dense(2, W_std=W, b_std=b), stax.GlobalAvgPool()),
                    (3, 5, 2), 2, {}, "pad"),
        # channel-wise masks collapse in the first Dense (a position masked iff all its channels)
        "mlp_entry": (stax.serial(stax.Dense(3, W_std=W, b_std=b), stax.Gelu(),
                                  stax.Dense(2, W_std=W), stax.GlobalAvgPool()),
                      (3, 4, 2), 2, {}, "entry"),
        # conv masks: an output takes its window centre's mask; strided VALID pooling
        "conv_pool": (stax.serial(stax.Conv(3, (3,), padding="SAME", W_std=W, b_std=b),
                                  stax.Relu(), stax.AvgPool((2,), strides=(2,)),
                                  stax.Conv(2, (2,), W_std=W, b_std=b), stax.Sin(),
                                  stax.GlobalSumPool()),
                      (3, 6, 2), 2, {}, "pos"),
        "conv2d_flatten": (stax.serial(stax.Conv(3, (2, 2), strides=(1, 2), padding="SAME",
                                                 W_std=W, b_std=b), stax.Relu(),
                                       stax.SumPool((2, 1), padding="SAME"), stax.Flatten(),
                                       stax.Dense(1, W_std=W, b_std=b)),
                           (2, 3, 4, 2), 2, {}, "pos"),
        "attn_softmax": (stax.serial(stax.Dense(4, W_std=W, b_std=b),
                                     stax.GlobalSelfAttention(4, 3, 3, 2, W_key_std=1.2,
                                                              W_query_std=0.8, b_std=b,
                                                              pos_emb_type="SUM"),
                                     stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1, W_std=W)),
                         (3, 4, 2), 2, {}, "pad"),
        "attn_identity": (stax.serial(stax.Dense(3, W_std=W, b_std=b),
                                      stax.GlobalSelfAttention(
                                          3, 2, 2, 2, linear_scaling=False,
                                          attention_mechanism="IDENTITY", pos_emb_type="CONCAT",
                                          n_chan_pos_emb=2, W_pos_emb_std=0.5, b_std=b),
                                      stax.Relu(), stax.GlobalAvgPool()),
                          (3, 4, 2), 2, {}, "pos"),
        "aggregate": (stax.serial(stax.Dense(3, W_std=W, b_std=b), stax.Relu(), stax.Aggregate(),
                                  stax.Dense(3, W_std=W, b_std=b), stax.Relu(),
                                  stax.GlobalAvgPool(), stax.Dense(1, W_std=W)),
                      (3, 4, 3), 2, {"pattern": (adj1, adj2)}, "pad"),
        "dot_general": (stax.serial(stax.Dense(3, W_std=W, b_std=b), stax.Relu(),
                                    stax.DotGeneral(rhs=mix, dimension_numbers=(((1,), (0,)),
                                                                                ((), ()))),
                                    stax.Dense(3, W_std=W, b_std=b, channel_axis=1), stax.Relu(),
                                    stax.GlobalAvgPool(channel_axis=1)),
                        (3, 3, 2), 2, {}, "pos"),
        "fanin_layernorm": (stax.serial(stax.Dense(3, W_std=W, b_std=b), stax.FanOut(2),
                                        stax.parallel(stax.Relu(), stax.serial(
                                            stax.Erf(), stax.Dense(3, W_std=W))),
                                        stax.FanInConcat(), stax.Dense(3, W_std=W, b_std=b),
                                        stax.LayerNorm(axis=(1, 2)), stax.Relu(),
                                        stax.GlobalAvgPool()),
                            (3, 4, 2), 2, {}, "pad"),
    }
