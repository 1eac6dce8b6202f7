r"""``GlobalSelfAttention``: multi-head dot-product self-attention over all spatial positions, and
its infinite-width (infinite heads and key / value channels) kernels.

With ``linear_scaling=True`` (keys and queries tied, logits scaled by ``1 / n_chan_key``) the
logits converge to :math:`\sigma_{QK} K_{ii}[s, t]`, so the attention weights of example ``i``
are the deterministic :math:`G_i = \phi(\sigma_{QK} K_{ii})` (``phi`` = softmax over ``t``, or
elementwise identity / abs / relu), and the output covariance is
:math:`K'_{ij} = \sigma_{OV}^2\, G_i K_{ij} G_j^\top + \sigma_b^2`,
:math:`\Theta'_{ij} = \sigma_{OV}^2\, G_i \Theta_{ij} G_j^\top + 2 (K'_{ij} - \sigma_b^2)`
(Hron et al. 2020, as implemented by neural-tangents). With ``linear_scaling=False`` only the
identity mechanism has a closed form.

Layout: activations ``[n, *spatial, C]`` (axes given by ``batch_axis`` / ``channel_axis``);
kernels ``[n1, n2, *spatial pairs]`` in neural-tangents' zipped order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import check_int, check_positive, fail
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import (
    STAX,
    Layer,
    axis_arg,
    batch_channel_axes,
    check_axes,
    make_layer,
    single_branch,
)
from kjax.ntk.stax._dot import unzip_pairs, zip_pairs
from kjax.ntk.stax._requirements import AttentionMechanism, PositionalEmbedding

_HI = jax.lax.Precision.HIGHEST
#: neural-tangents' stand-in for -inf in a masked softmax (softmax of all -inf is NaN)
_NEG_INF = -1e20
_MECH = {"SOFTMAX": lambda x: jax.nn.softmax(x, axis=-1), "IDENTITY": lambda x: x,
         "ABS": jnp.abs, "RELU": lambda x: jnp.maximum(x, 0.0)}


def _enum(fn, arg, value, enum):
    name = str(getattr(value, "value", value)).upper()
    allowed = tuple(e.value for e in enum)
    if name not in allowed:
        fail(fn, arg, f"be one of {allowed} or a {enum.__name__}", repr(value))
    return name


def _pos_emb_cov(spatial: tuple[int, ...], p_norm: float, decay_fn: Callable | None) -> jax.Array:
    """NT's positional-embedding covariance ``R[s, t]`` over the flattened positions: the
    identity, or ``decay_fn(sum_a |s_a - t_a|^p)``."""
    size = math.prod(spatial)
    if decay_fn is None:
        return jnp.eye(size)
    idx = np.indices(spatial).reshape(len(spatial), size)
    d = sum(np.abs(idx[a][:, None] - idx[a][None, :]) ** p_norm for a in range(len(spatial)))
    return jnp.asarray(decay_fn(jnp.asarray(d, jnp.result_type(float))))


def GlobalSelfAttention(n_chan_out: int, n_chan_key: int, n_chan_val: int, n_heads: int,
                        linear_scaling: bool = True, W_key_std: float = 1.0,
                        W_value_std: float = 1.0, W_query_std: float = 1.0,
                        W_out_std: float = 1.0, b_std: float | None = None,
                        attention_mechanism: str = AttentionMechanism.SOFTMAX.name,
                        pos_emb_type: str = PositionalEmbedding.NONE.name,
                        pos_emb_p_norm: float = 2, pos_emb_decay_fn: Callable | None = None,
                        n_chan_pos_emb: int | None = None, W_pos_emb_std: float = 1.0,
                        val_pos_emb: bool = False, batch_axis: int = 0,
                        channel_axis: int = -1) -> Layer:
    r"""Global scaled dot-product self-attention (neural-tangents' layer, same arguments).

    One head computes :math:`\phi(c\, Q(x) K(x)^\top) V(x)` over all spatial positions (flattened);
    the heads are concatenated and mapped by :math:`W_{out}` (plus a bias per channel). With
    ``linear_scaling=True``, :math:`c = \sigma_Q \sigma_K / (C_{in} n_{key})` and the query
    weights are the key weights (tied); otherwise :math:`c = \sigma_Q \sigma_K / (C_{in}
    \sqrt{n_{key}})` with independent queries. ``kernel_fn`` gives the limit of infinitely many
    heads and key / value channels (see the module docstring for the formulas). Positional
    embeddings (``pos_emb_type="SUM"`` / ``"CONCAT"``) add a fixed random field with covariance
    :math:`R` (the identity, or ``pos_emb_decay_fn`` of the L-p distance to the power p) to the
    inputs of the keys / queries (and of the values with ``val_pos_emb``); in the kernel
    :math:`K \to w_x K + w_R \sigma_{pe}^2 R` (weights by channel counts for ``"CONCAT"``).

    Args:
      n_chan_out: output channels.
      n_chan_key: key / query channels per head.
      n_chan_val: value channels per head.
      n_heads: number of heads.
      linear_scaling: scale logits by ``1 / n_chan_key`` and tie keys and queries (closed-form
        kernels for every mechanism) instead of ``1 / sqrt(n_chan_key)`` (closed form only for
        ``"IDENTITY"``).
      W_key_std: key weight std; the kernels depend on ``W_key_std * W_query_std``.
      W_value_std: value weight std; the kernels depend on ``W_out_std * W_value_std``.
      W_query_std: query weight std (neural-tangents' default 1.0).
      W_out_std: output weight std.
      b_std: bias std, or None for no bias.
      attention_mechanism: ``"SOFTMAX"``, ``"IDENTITY"``, ``"ABS"`` or ``"RELU"`` (or an
        :class:`AttentionMechanism`).
      pos_emb_type: ``"NONE"``, ``"SUM"`` or ``"CONCAT"`` (or a :class:`PositionalEmbedding`).
      pos_emb_p_norm: the ``p`` of the distances given to ``pos_emb_decay_fn``.
      pos_emb_decay_fn: maps distances to the embeddings' covariance (e.g. ``lambda d:
        jnp.exp(-d)``); None is one-hot embeddings (covariance the identity).
      n_chan_pos_emb: embedding channels (None: as the inputs); ``"SUM"`` needs them equal.
      W_pos_emb_std: std of the random embeddings.
      val_pos_emb: add the embeddings to the values' inputs too.
      batch_axis: batch axis of the inputs.
      channel_axis: channel axis of the inputs.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; params ``(query [n_heads, C_k, n_chan_key] or None when
      tied, key [n_heads, C_k, n_chan_key], value [n_heads, C_v, n_chan_val], W_out [n_heads *
      n_chan_val, n_chan_out], b or None, pos_emb or None)`` as neural-tangents'.

    Raises:
      KjaxError: non-positive sizes, negative stds, an unknown mechanism / embedding type, bad
        axes; (``kernel_fn``) ``linear_scaling=False`` with a mechanism other than
        ``"IDENTITY"`` (no closed form; neural-tangents raises too), ``diagonal_spatial=True``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), stax.GlobalSelfAttention(8, 4, 4, 2),
      ...                               stax.Relu(), stax.GlobalAvgPool())
      >>> kernel_fn(jnp.ones((2, 5, 3)), get="ntk").shape
      (2, 2)

    References:
      Hron, Bahri, Sohl-Dickstein, Novak. Infinite attention: NNGP and NTK for deep attention
      networks. ICML 2020.
    """
    fn = f"{STAX}.GlobalSelfAttention"
    for arg, v in (("n_chan_out", n_chan_out), ("n_chan_key", n_chan_key),
                   ("n_chan_val", n_chan_val), ("n_heads", n_heads)):
        check_int(fn, arg, v, minimum=1)
    for arg, v in (("W_key_std", W_key_std), ("W_value_std", W_value_std),
                   ("W_query_std", W_query_std), ("W_out_std", W_out_std), ("b_std", b_std),
                   ("W_pos_emb_std", W_pos_emb_std)):
        check_positive(fn, arg, v, allow_zero=True)
    if n_chan_pos_emb is not None:
        check_int(fn, "n_chan_pos_emb", n_chan_pos_emb, minimum=1)
    mech = _enum(fn, "attention_mechanism", attention_mechanism, AttentionMechanism)
    pe = _enum(fn, "pos_emb_type", pos_emb_type, PositionalEmbedding)
    if pos_emb_decay_fn is not None and not callable(pos_emb_decay_fn):
        fail(fn, "pos_emb_decay_fn", "be None or a function of distances", repr(pos_emb_decay_fn))
    batch_axis = axis_arg(fn, "batch_axis", batch_axis)
    channel_axis = axis_arg(fn, "channel_axis", channel_axis)
    QK_std, OV_std = W_query_std * W_key_std, W_out_std * W_value_std
    b2 = 0.0 if b_std is None else b_std**2

    def layout(where, nd):
        b, c = batch_channel_axes(f"{fn} {where}", batch_axis, channel_axis, nd)
        return b, c

    def n_pos(c_in, where):
        n = c_in if n_chan_pos_emb is None else n_chan_pos_emb
        if pe == "SUM" and n != c_in:
            fail(f"{fn} {where}", "n_chan_pos_emb", f"be None or the input channels ({c_in}) "
                 "with pos_emb_type='SUM'", repr(n_chan_pos_emb))
        return n

    def init_fn(rng, input_shape):
        input_shape = tuple(input_shape)
        b, c = layout("init_fn", len(input_shape))
        out_shape = input_shape[:c] + (n_chan_out,) + input_shape[c + 1:]
        rng_q, rng_k, rng_v, rng_o, rng_b, rng_pe = jax.random.split(rng, 6)
        c_keys = c_vals = input_shape[c]
        pos_emb = None
        if pe != "NONE":
            npe = n_pos(input_shape[c], "init_fn")
            shape = list(input_shape)
            shape[c], shape[b] = npe, 1
            pos_emb = jax.random.normal(rng_pe, tuple(shape))
            if pe == "CONCAT":
                c_keys += npe
                if val_pos_emb:
                    c_vals += npe
        keys = jax.random.normal(rng_k, (n_heads, c_keys, n_chan_key))
        vals = jax.random.normal(rng_v, (n_heads, c_vals, n_chan_val))
        W_out = jax.random.normal(rng_o, (n_chan_val * n_heads, n_chan_out))
        bias = None
        if b_std is not None:
            b_shape = [1] * len(input_shape)
            b_shape[c] = n_chan_out
            bias = jax.random.normal(rng_b, tuple(b_shape))
        queries = None if linear_scaling else jax.random.normal(rng_q, (n_heads, c_keys,
                                                                         n_chan_key))
        return out_shape, (queries, keys, vals, W_out, bias, pos_emb)

    def apply_fn(params, inputs, mask=None, **kwargs):
        query_m, key_m, val_m, W_out, bias, pos_emb = params
        nd = inputs.ndim
        b, c = layout("apply_fn", nd)
        spatial_axes = tuple(a for a in range(nd) if a not in (b, c))
        spatial = tuple(inputs.shape[a] for a in spatial_axes)
        n = inputs.shape[b]
        if key_m.shape[1] != inputs.shape[c] + (0 if pe != "CONCAT" else
                                                n_pos(inputs.shape[c], "apply_fn")):
            fail(f"{fn} apply_fn", "inputs", f"have the channels the params were made for "
                 f"({key_m.shape[1]} key inputs)", f"shape {inputs.shape}")
        inputs_val = None
        if pos_emb is not None:
            if pos_emb_decay_fn is not None:
                R = _pos_emb_cov(spatial, pos_emb_p_norm, pos_emb_decay_fn)
                L = jnp.linalg.cholesky(R).reshape(spatial + spatial).astype(inputs.dtype)
                k = len(spatial)
                pos_emb = jnp.tensordot(L, pos_emb, (tuple(range(k, 2 * k)), spatial_axes))
                pos_emb = jnp.moveaxis(pos_emb, tuple(range(k)), spatial_axes)
            if mask is not None:  # NT: no positional embedding at masked entries
                pos_emb = jnp.where(mask, jnp.zeros((), pos_emb.dtype), pos_emb)
            pos_emb = pos_emb * W_pos_emb_std
            if pe == "SUM":
                inputs_val = None if val_pos_emb else inputs
                inputs = pos_emb + inputs
            else:
                inputs_val = None if val_pos_emb else inputs
                shape = list(inputs.shape)
                shape[c] = pos_emb.shape[c]
                inputs = jnp.concatenate([inputs, jnp.broadcast_to(pos_emb, tuple(shape))],
                                         axis=c)

        def flat(x):
            x = jnp.moveaxis(x, (b, c), (0, -1))
            return x.reshape((n, -1, x.shape[-1]))

        inputs = flat(inputs)

        def heads_dot(m, x):
            return jnp.moveaxis(jnp.dot(x, m, precision=_HI), 2, 0)  # [heads, n, S, ch]

        if inputs_val is not None:
            inputs_val = flat(inputs_val)
            values, c_in = heads_dot(val_m, inputs_val), inputs_val.shape[-1]
        else:
            values, c_in = heads_dot(val_m, inputs), inputs.shape[-1]
        keys = heads_dot(key_m, inputs)
        queries = keys if linear_scaling else heads_dot(query_m, inputs)
        G = jnp.matmul(queries, jnp.swapaxes(keys, -1, -2), precision=_HI)
        G = G * (QK_std / (inputs.shape[-1] * n_chan_key ** (1 if linear_scaling else 0.5)))
        if mask is not None:  # masked positions are not attended to (as keys)
            km = jnp.moveaxis(jnp.all(mask, axis=c, keepdims=True), (b, c), (0, -1))
            km = km.reshape((1, km.shape[0], 1, -1))
            G = jnp.where(km, jnp.asarray(_NEG_INF if mech == "SOFTMAX" else 0.0, G.dtype), G)
        G = _MECH[mech](G)
        heads = jnp.matmul(G, values, precision=_HI)  # [heads, n, S, n_chan_val]
        heads = jnp.moveaxis(heads, 0, -1)
        heads = heads.reshape(heads.shape[:-2] + (-1,))
        out = jnp.matmul(heads, W_out, precision=_HI)
        out = out * (OV_std / (n_chan_val * n_heads * c_in) ** 0.5)
        out = out.reshape((n, *spatial, n_chan_out))
        out = jnp.moveaxis(out, (0, -1), (b, c))
        if bias is not None:
            out = out + b_std * bias
        return out

    def transform(st):
        st = single_branch(fn, st)
        kfn = f"{fn} kernel_fn"
        check_axes(kfn, st, batch_axis, channel_axis)
        if not linear_scaling and mech != "IDENTITY":
            fail(kfn, "attention_mechanism", "be 'IDENTITY' when linear_scaling=False (the "
                 "kernel of square-root-scaled attention has no closed form; use "
                 "linear_scaling=True)", repr(mech))
        if st.diag:
            fail(kfn, "diagonal_spatial", "be None or False: attention mixes positions, which "
                 "needs the full spatial covariance", "True")
        N = st.nngp.shape[0]
        spatial = tuple(st.shape1[1:-1])
        S = math.prod(spatial)

        def flat(mat):
            return unzip_pairs(mat).reshape((N, N, S, S))

        def unflat(mat):
            return zip_pairs(mat.reshape((N, N) + spatial + spatial))

        nngp, ntk = flat(st.nngp), flat(st.ntk)
        R = None
        pair_masked = None
        if st.mask is not None and pe != "NONE":
            # NT masks the positional covariance between entries of which one is masked
            pair_masked = flat(K.pair_mask(K.spatial_mask(kfn, st), False))
        kw, pw = 1.0, W_pos_emb_std**2
        if pe != "NONE":
            R = _pos_emb_cov(spatial, pos_emb_p_norm, pos_emb_decay_fn).astype(nngp.dtype)
            if pe == "CONCAT":
                c_in = st.shape1[-1]
                npe = n_pos(c_in, "kernel_fn")
                kw, pw = kw * c_in / (c_in + npe), pw * npe / (c_in + npe)
            elif n_chan_pos_emb is not None:
                n_pos(st.shape1[-1], "kernel_fn")

        def interp(mat):
            if R is None:
                return mat
            Rm = R[None, None]
            if pair_masked is not None:
                Rm = jnp.where(pair_masked, jnp.zeros((), mat.dtype), Rm)
            return kw * mat + pw * Rm

        if linear_scaling:
            ni = interp(nngp)
            cov = ni[jnp.arange(N), jnp.arange(N)]  # [N, S, S]: each example with itself
            if st.mask is not None:  # masked keys get no attention (NT's _get_weighting)
                km = jnp.all(st.mask, axis=-1).reshape((N, 1, S))
                cov = jnp.where(km, jnp.asarray(_NEG_INF if mech == "SOFTMAX" else 0.0,
                                                cov.dtype), cov)
            G = _MECH[mech](QK_std * cov)

            def weigh(mat):
                return OV_std**2 * jnp.einsum("ist,ijtu,jvu->ijsv", G, mat, G, precision=_HI,
                                              optimize=True) + b2

            new_nngp = weigh(ni if val_pos_emb else nngp)
            new_ntk = weigh(interp(ntk) if val_pos_emb else ntk) + 2 * (new_nngp - b2)
        else:
            ni, ti = interp(nngp), interp(ntk)

            def dot(a, b_):
                return jnp.sum(a * b_, axis=(2, 3), keepdims=True)

            D = dot(ni, ni if val_pos_emb else nngp)
            std2 = (QK_std * OV_std) ** 2
            new_nngp = std2 * (D * ni) + b2
            if val_pos_emb or pe == "NONE":
                t = 2 * dot(ni, ti)
            else:
                t = dot(ni, ntk) + dot(nngp, ti)
            new_ntk = std2 * (t * ni + D * (ti + 4 * ni)) + b2
        return st.replace(nngp=unflat(new_nngp), ntk=unflat(new_ntk), is_gaussian=True,
                          shape1=st.shape1[:-1] + (n_chan_out,),
                          shape2=st.shape2[:-1] + (n_chan_out,))

    def mask_fn(mask, input_shape):
        return jnp.all(mask, axis=channel_axis, keepdims=True)

    return make_layer(init_fn, apply_fn, transform, f"GlobalSelfAttention({n_chan_out})",
                      needs_full=True, reqs={"batch_axis": batch_axis,
                                             "channel_axis": channel_axis},
                      mask_fn=mask_fn, remask=True)
