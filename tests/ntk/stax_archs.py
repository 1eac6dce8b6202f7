"""The reference architectures, written once against a ``stax`` module (kjax's or neural-tangents').

``benchmarks/peers/nt_stax_reference.py`` builds them with ``neural_tangents.stax`` to store the
oracle; the tests build them with ``kjax.ntk.stax`` and compare. Keyword arguments only, so both
libraries read them the same way. Each entry: ``name -> (layer, x1 shape, x2 batch size)``.
"""


def architectures(stax):
    W, b = 1.5, 0.2
    res_branch = stax.serial(stax.Relu(), stax.Dense(64, W_std=W, b_std=b))
    conv_res = stax.serial(stax.Relu(), stax.Conv(6, (3, 3), padding="SAME", W_std=W, b_std=b))
    return {
        "mlp_relu": (stax.serial(stax.Dense(64, W_std=W, b_std=b), stax.Relu(),
                                 stax.Dense(64, W_std=W, b_std=b), stax.Relu(),
                                 stax.Dense(1, W_std=W, b_std=b)), (5, 4), 3),
        "mlp_standard": (stax.serial(stax.Dense(32, W_std=W, b_std=b, parameterization="standard"),
                                     stax.Relu(),
                                     stax.Dense(16, W_std=W, b_std=b, parameterization="standard"),
                                     stax.Erf(),
                                     stax.Dense(1, W_std=W, b_std=b, parameterization="standard")),
                         (5, 4), 3),
        "mlp_activations": (stax.serial(stax.Dense(64, W_std=W, b_std=b), stax.Gelu(),
                                        stax.Dense(64, W_std=W, b_std=b), stax.LeakyRelu(alpha=0.1),
                                        stax.Dense(64, W_std=W, b_std=b), stax.ABRelu(a=-0.5, b=1.5),
                                        stax.Dense(64, W_std=W, b_std=b), stax.Erf(a=1.2, b=0.7, c=0.1),
                                        stax.Dense(64, W_std=W), stax.LayerNorm(),
                                        stax.Identity(), stax.Dense(1, W_std=W, b_std=b)), (5, 4), 3),
        "resnet_mlp": (stax.serial(stax.Dense(64, W_std=W, b_std=b),
                                   stax.FanOut(2), stax.parallel(res_branch, stax.Identity()),
                                   stax.FanInSum(),
                                   stax.FanOut(2), stax.parallel(res_branch, stax.Dense(32, W_std=W)),
                                   stax.FanInConcat(),
                                   stax.Dense(64, W_std=W, b_std=b), stax.Relu(),
                                   stax.Dense(1, W_std=W, b_std=b)), (5, 4), 3),
        "cnn_flatten": (stax.serial(stax.Conv(6, (3, 3), padding="SAME", W_std=W, b_std=b),
                                    stax.Relu(),
                                    stax.Conv(6, (2, 2), strides=(2, 2), padding="VALID", W_std=W,
                                              b_std=b),
                                    stax.Relu(), stax.Flatten(), stax.Dense(1, W_std=W, b_std=b)),
                        (3, 6, 5, 2), 2),
        "cnn_gap": (stax.serial(stax.Conv(6, (3, 3), padding="SAME", W_std=W, b_std=b), stax.Relu(),
                                stax.AvgPool((2, 2), strides=(1, 2), padding="SAME"),
                                stax.Conv(6, (2, 3), padding="VALID", W_std=W, b_std=b), stax.Erf(),
                                stax.GlobalAvgPool(), stax.Dense(1, W_std=W, b_std=b)),
                    (3, 6, 5, 2), 2),
        "cnn_standard": (stax.serial(stax.Conv(6, (3, 3), padding="SAME", W_std=W, b_std=b,
                                               parameterization="standard"), stax.Relu(),
                                     stax.Conv(4, (3, 3), strides=(2, 1), padding="SAME", W_std=W,
                                               b_std=b, parameterization="standard"), stax.Relu(),
                                     stax.GlobalAvgPool(),
                                     stax.Dense(1, W_std=W, b_std=b, parameterization="standard")),
                         (3, 5, 4, 2), 2),
        "conv1d": (stax.serial(stax.Conv(6, (3,), strides=(2,), padding="SAME", W_std=W, b_std=b),
                               stax.Gelu(), stax.Conv(6, (3,), padding="CIRCULAR", W_std=W, b_std=b),
                               stax.LayerNorm(axis=(1, 2)), stax.Relu(),
                               stax.AvgPool((2,), padding="VALID"),
                               stax.Conv(6, (2,), W_std=W, b_std=b), stax.Relu(), stax.GlobalAvgPool(),
                               stax.Dense(1, W_std=W, b_std=b)), (3, 9, 2), 2),
        "resnet_cnn": (stax.serial(stax.Conv(6, (3, 3), padding="SAME", W_std=W, b_std=b),
                                   stax.FanOut(2), stax.parallel(conv_res, stax.Identity()),
                                   stax.FanInSum(), stax.Relu(), stax.GlobalAvgPool(),
                                   stax.Dense(1, W_std=W, b_std=b)), (3, 5, 4, 2), 2),
        "cnn_spatial_out": (stax.serial(stax.Conv(6, (2, 3), padding="VALID", W_std=W, b_std=b),
                                        stax.Relu(), stax.Conv(6, (3, 2), padding="SAME", W_std=W)),
                            (2, 4, 5, 2), 2),
    }
