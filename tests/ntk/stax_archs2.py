"""The reference networks of issue #14's structural layers and kernel semantics, written once
against a ``stax`` module (kjax's or neural-tangents').

``benchmarks/peers/nt_stax_reference2.py`` builds them with ``neural_tangents.stax`` to store the
oracle (tests/ntk/data/nt_stax_reference2.npz); ``tests/ntk/test_stax_structure.py`` builds them
with ``kjax.ntk.stax`` and compares. Each entry: ``name -> (layer, x1 shape, x2 batch size,
kernel_fn keyword arguments)``. Shapes are tiny: these run in the default test suite.
"""


def architectures(stax):
    W, b = 1.5, 0.2
    nchw = ("NCHW", "OIHW", "NCHW")
    ch1 = {"batch_axis": 0, "channel_axis": 1}
    return {
        # Conv dimension_numbers and channel_axis on pooling / LayerNorm / Dense
        "nchw": (stax.serial(stax.Conv(3, (2, 3), padding="SAME", W_std=W, b_std=b,
                                       dimension_numbers=nchw),
                             stax.Relu(), stax.AvgPool((2, 2), padding="SAME", channel_axis=1),
                             stax.Conv(2, (2, 2), W_std=W, b_std=b, dimension_numbers=nchw),
                             stax.LayerNorm(axis=(1, 2), channel_axis=1), stax.Relu(),
                             stax.GlobalAvgPool(channel_axis=1),
                             stax.Dense(1, W_std=W, b_std=b)), (2, 2, 3, 4), 2, {}),
        # channels on axis 1 through Dense, a product of branches and repeat; Flatten to [C, n]
        "mlp_mix": (stax.serial(stax.Dense(4, W_std=W, b_std=b, **ch1), stax.FanOut(3),
                                stax.parallel(stax.Dense(4, W_std=W, b_std=b, **ch1),
                                              stax.serial(stax.Relu(), stax.Dense(4, W_std=W, **ch1)),
                                              stax.Identity()),
                                stax.FanInProd(),
                                stax.repeat(stax.serial(stax.Dense(4, W_std=W, b_std=b, **ch1),
                                                        stax.Relu()), 2),
                                stax.Flatten(batch_axis_out=1),
                                stax.Dense(2, W_std=W, batch_axis=1, channel_axis=0)),
                    (3, 2, 4), 2, {}),
        # pooling by sums; branches concatenated along a spatial axis
        "sumpool": (stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=W, b_std=b), stax.Relu(),
                                stax.SumPool((2, 2), strides=(1, 2), padding="SAME"),
                                stax.FanOut(2),
                                stax.parallel(stax.Conv(2, (2, 1), W_std=W), stax.Conv(2, (1, 1), W_std=W)),
                                stax.FanInConcat(axis=1), stax.Erf(),
                                stax.SumPool((2, 1), padding="VALID"), stax.GlobalSumPool(),
                                stax.Dense(1, W_std=W, b_std=b)), (2, 4, 5, 2), 2, {}),
        # locally connected layers (ntk and standard), pooled after them
        "conv_local": (stax.serial(stax.ConvLocal(3, (2, 2), padding="SAME", W_std=W, b_std=b),
                                   stax.Relu(),
                                   stax.ConvLocal(3, (2, 2), W_std=W, b_std=b,
                                                  parameterization="standard"),
                                   stax.Relu(), stax.AvgPool((2, 2)), stax.Flatten(),
                                   stax.Dense(1, W_std=W, b_std=b)), (2, 4, 4, 2), 2, {}),
        "dropout": (stax.serial(stax.Conv(3, (2,), padding="SAME", W_std=W, b_std=b), stax.Relu(),
                                stax.Dropout(0.7, mode="train"), stax.Conv(2, (2,), W_std=W),
                                stax.Relu(), stax.Dropout(0.5, mode="test"),
                                stax.GlobalAvgPool(), stax.Dense(1, W_std=W)), (3, 4, 2), 2, {}),
        # indexing (a range, a reversal, an int that drops an axis) around a transposed conv
        "index": (stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=W, b_std=b), stax.Relu(),
                              stax.Index(idx=stax.Slice[:, 1:4, ::-1]),
                              stax.ConvTranspose(3, (2, 3), strides=(2, 1), W_std=W, b_std=b,
                                                 parameterization="standard"), stax.Relu(),
                              stax.Index(idx=stax.Slice[..., 0, :]), stax.GlobalAvgPool(),
                              stax.Dense(1, W_std=W)), (2, 5, 4, 2), 2, {}),
        # the kernel_fn keyword arguments
        "diag_spatial": (stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=W, b_std=b),
                                     stax.Relu(), stax.FanOut(2),
                                     stax.parallel(stax.Conv(2, (2, 2), W_std=W, b_std=b),
                                                   stax.Conv(2, (1, 2), W_std=W)),
                                     stax.FanInConcat(axis=1)),
                         (3, 4, 3, 2), 2, {"diagonal_spatial": True, "diagonal_batch": False}),
        "full_batch": (stax.serial(stax.Conv(3, (2,), padding="SAME", W_std=W, b_std=b), stax.Relu(),
                                   stax.AvgPool((2,))), (3, 4, 2), 2, {"diagonal_batch": False}),
    }


def feed_back(stax):
    """A network split in two: ``tail(head(x1, x2))`` must equal ``serial(head, tail)(x1, x2)``."""
    W, b = 1.5, 0.2
    head = stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=W, b_std=b), stax.Relu())
    tail = stax.serial(stax.Conv(3, (2, 2), W_std=W, b_std=b), stax.Relu(), stax.AvgPool((2, 2)),
                       stax.Flatten(), stax.Dense(1, W_std=W))
    return head, tail, (2, 3, 3, 2), 1


def branches(stax):
    """A parallel network on a list of two inputs that ends in two branches."""
    W, b = 1.5, 0.2
    return stax.parallel(stax.serial(stax.Dense(3, W_std=W, b_std=b), stax.Relu()),
                         stax.serial(stax.Conv(3, (2,), W_std=W, b_std=b), stax.Erf(),
                                     stax.Flatten())), [(3, 4), (3, 5, 2)], 2
