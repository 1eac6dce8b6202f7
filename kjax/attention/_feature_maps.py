"""Feature maps ``phi: [..., D] -> [..., M]`` for kernel attention.

Every map is a pure function of the inputs (and of explicit parameters for the random and learned
maps), acting on the last axis and broadcasting over all leading axes, so it applies to ``[B, T, H,
D]`` queries and keys directly. The output has the input dtype; the projections accumulate in at
least float32.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from kjax._src import dtypes
from kjax._src.errors import KjaxTypeError, check_in, check_int, check_positive, check_rank, fail
from kjax._src.random_features import check_key, float_dtype

_HI = jax.lax.Precision.HIGHEST


def _prep(fn: str, x) -> jax.Array:
    x = dtypes.as_float_array(fn, "x", x)
    if x.ndim < 1:
        fail(fn, "x", "have rank >= 1 [..., D]", f"shape {x.shape} (rank 0)")
    if x.shape[-1] == 0:
        fail(fn, "x", "have D >= 1 in its last axis [..., D]", f"shape {x.shape}")
    return x


def check_projection(fn: str, d: int, w, arg: str = "w") -> jax.Array:
    """A projection ``[M, D]`` with ``M >= 1`` matching the inputs' ``D`` (``arg`` names it)."""
    w = dtypes.as_float_array(fn, arg, w)
    check_rank(fn, arg, w, 2, layout="[M, D]")
    if w.shape[1] != d:
        fail(fn, arg, f"have shape (M, {d}) matching x's last axis D={d}", f"shape {w.shape}")
    if w.shape[0] == 0:
        fail(fn, arg, "have M >= 1 rows (features)", f"shape {w.shape}")
    return w


def _project(x, w):
    """``x @ w.T`` in at least float32."""
    acc = dtypes.accum_dtype(dtypes.result_dtype(x, w))
    return jnp.einsum("...d,md->...m", x.astype(acc), w.astype(acc), precision=_HI)


def weight_stabilizer(w, dtype):
    """``c = max(0, max_m |w_m|^2 / 2 - log(finfo(dtype).max) / 2)`` (see :func:`favor_positive`)."""
    half_log_max = 0.5 * math.log(float(jnp.finfo(dtype).max))
    return jnp.maximum(0.5 * jnp.max(jnp.sum(w * w, axis=-1)) - half_log_max, 0.0)


def favor_positive(
    x: Float[ArrayLike, "... D"],
    w: Float[ArrayLike, "M D"],
    *,
    stabilize: str = "weights",
) -> Float[Array, "... M"]:
    r"""Positive random features for the softmax kernel (FAVOR+).

    .. math::
        \phi(x) = \frac{1}{\sqrt M}\,
        \exp\!\Big(W x - \tfrac12\lVert x\rVert^2 - c\Big) \in \mathbb R_{>0}^M,
        \qquad \mathbb E_W\big[\phi(x)^\top\phi(y)\big] = e^{-2c}\, e^{x^\top y}

    for rows of ``W`` drawn from :math:`\mathcal N(0, I_D)` (see :func:`random_projection`). The
    stabiliser :math:`c` only rescales the estimate:

    * ``"weights"`` (default): :math:`c = \max\big(0, \max_m \lVert w_m\rVert^2/2 - L/2\big)`
      with :math:`L` the log of the largest finite number of ``x.dtype`` (88.7 for float32), a
      constant of ``w`` alone. Since :math:`w^\top x - \lVert x\rVert^2/2 \le \lVert
      w\rVert^2/2`, every feature is at most :math:`e^{L/2}/\sqrt M`, so neither features nor
      their products :math:`\phi(q)^\top\phi(k)` can overflow, for queries or keys, in a full pass
      or while streaming/decoding token by token (the constant does not depend on the data). The
      common factor :math:`e^{-2c}` cancels in normalised attention, and for moderate projections
      (float32 and :math:`\lVert w_m\rVert^2 \le 88`, e.g. ``D <= 64`` in practice) :math:`c = 0`:
      the estimator is exactly the unbiased one and ``eps`` keeps its meaning.
    * ``"row"``: :math:`c` is the maximum over features of each row's exponent (per token). This
      factor cancels in normalised attention only on the *query* side; use it for queries (as
      :func:`kernel_attention` does), never for keys.
    * ``None``: :math:`c = 0`, the unbiased estimator of :math:`e^{x^\top y}` (may overflow).

    For softmax attention with temperature :math:`1/\sqrt D`, scale queries and keys by
    :math:`D^{-1/4}` before the map.

    Non-finite inputs are not checked (values are traced): a row of ``x`` holding ``inf`` or
    ``NaN`` gives a row of ``NaN`` features (always all NaN, never a mix of 0 and inf), other rows
    are unaffected.

    Args:
      x: ``[..., D]`` inputs (queries or keys).
      w: ``[M, D]`` projection, e.g. ``random_projection(key, M, D, kind="orthogonal")``.
      stabilize: ``"weights"``, ``"row"`` or ``None`` (see above).

    Returns:
      ``[..., M]`` positive features, dtype of ``x``.

    Raises:
      ValueError: ``w`` not of shape ``(M, D)`` with ``M >= 1``; ``D = 0``; unknown ``stabilize``.
      TypeError: complex inputs.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.attention import favor_positive, random_projection
      >>> w = random_projection(jax.random.key(0), 16, 4, kind="orthogonal")
      >>> phi = favor_positive(jnp.ones((2, 3, 4)), w)
      >>> print(phi.shape, bool(jnp.all(phi > 0)))
      (2, 3, 16) True

    References:
      Choromanski et al., *Rethinking Attention with Performers*, ICLR 2021, Lemma 1.
    """
    fn = "kjax.attention.favor_positive"
    x = _prep(fn, x)
    w = check_projection(fn, x.shape[-1], w)
    check_in(fn, "stabilize", stabilize, ("weights", "row", None))
    wx = _project(x, w)
    xx = x.astype(wx.dtype)
    sq = jnp.sum(xx * xx, axis=-1, keepdims=True)
    # 0 * |x|^2 is NaN exactly when a row holds inf/NaN: such rows become all-NaN, deterministically
    expo = wx - 0.5 * sq + 0 * sq
    if stabilize == "weights":
        expo = expo - weight_stabilizer(w.astype(wx.dtype), x.dtype)
    elif stabilize == "row":
        expo = expo - jax.lax.stop_gradient(jnp.max(expo, axis=-1, keepdims=True))
    m = w.shape[0]
    return (jnp.exp(expo) / math.sqrt(m)).astype(x.dtype)


def favor_trig(x: Float[ArrayLike, "... D"], w: Float[ArrayLike, "M D"]) -> Float[Array, "... 2M"]:
    r"""Trigonometric random features for the softmax kernel.

    .. math::
        \phi(x) = \frac{e^{\lVert x\rVert^2/2}}{\sqrt M}\big[\sin(Wx), \cos(Wx)\big],
        \qquad \mathbb E_W\big[\phi(x)^\top\phi(y)\big] = e^{x^\top y}

    (random Fourier features of the Gaussian kernel, times the norms). Features can be negative,
    so normalised attention with them can have tiny or negative denominators; prefer
    :func:`favor_positive`.

    Args:
      x: ``[..., D]`` inputs.
      w: ``[M, D]`` projection with rows from :math:`\mathcal N(0, I_D)`.

    Returns:
      ``[..., 2M]`` features, dtype of ``x``.

    Raises:
      ValueError: ``w`` not of shape ``(M, D)`` with ``M >= 1``; ``D = 0``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.attention import favor_trig, random_projection
      >>> w = random_projection(jax.random.key(0), 8, 4)
      >>> print(favor_trig(jnp.zeros((3, 4)), w).shape)
      (3, 16)

    References:
      Rahimi & Recht, *Random Features for Large-Scale Kernel Machines*, NeurIPS 2007;
      Choromanski et al., *Rethinking Attention with Performers*, ICLR 2021, eq. 5.
    """
    fn = "kjax.attention.favor_trig"
    x = _prep(fn, x)
    w = check_projection(fn, x.shape[-1], w)
    wx = _project(x, w)
    xx = x.astype(wx.dtype)
    scale = jnp.exp(0.5 * jnp.sum(xx * xx, axis=-1, keepdims=True)) / math.sqrt(w.shape[0])
    return (scale * jnp.concatenate([jnp.sin(wx), jnp.cos(wx)], axis=-1)).astype(x.dtype)


def elu_plus_one(x: Float[ArrayLike, "... D"]) -> Float[Array, "... D"]:
    r"""The linear-transformer feature map :math:`\phi(x) = \mathrm{elu}(x) + 1 > 0`.

    Args:
      x: ``[..., D]`` inputs.

    Returns:
      ``[..., D]`` positive features, dtype of ``x``.

    Raises:
      TypeError: complex inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.attention import elu_plus_one
      >>> print(elu_plus_one(jnp.array([-10.0, 0.0, 2.0])) > 0)
      [ True  True  True]

    References:
      Katharopoulos et al., *Transformers are RNNs: Fast Autoregressive Transformers with Linear
      Attention*, ICML 2020, eq. 7.
    """
    x = _prep("kjax.attention.elu_plus_one", x)
    return jax.nn.elu(x) + 1


def relu_features(x: Float[ArrayLike, "... D"]) -> Float[Array, "... D"]:
    r"""The ReLU feature map :math:`\phi(x) = \max(x, 0)`.

    Rows can be all zero, so normalised attention relies on ``eps`` in its denominator.

    Args:
      x: ``[..., D]`` inputs.

    Returns:
      ``[..., D]`` non-negative features, dtype of ``x``.

    Raises:
      TypeError: complex inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.attention import relu_features
      >>> print(relu_features(jnp.array([-1.0, 2.0])))
      [0. 2.]

    References:
      Qin et al., *cosFormer: Rethinking Softmax in Attention*, ICLR 2022.
    """
    x = _prep("kjax.attention.relu_features", x)
    return jax.nn.relu(x)


def dpfp(x: Float[ArrayLike, "... D"], *, nu: int = 1) -> Float[Array, "... 2Dnu"]:
    r"""Deterministic parameter-free projection (DPFP).

    With :math:`r = [\mathrm{relu}(x), \mathrm{relu}(-x)] \in \mathbb R^{2D}`,

    .. math:: \phi(x) = \big[r \odot \mathrm{roll}(r, 1), \dots, r \odot \mathrm{roll}(r, \nu)\big]
        \in \mathbb R_{\ge 0}^{2D\nu}.

    Args:
      x: ``[..., D]`` inputs.
      nu: number of rolls :math:`\nu \ge 1` (capacity :math:`2D\nu`).

    Returns:
      ``[..., 2 * D * nu]`` non-negative features, dtype of ``x``.

    Raises:
      ValueError: ``nu < 1``. TypeError: ``nu`` not an int.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.attention import dpfp
      >>> print(dpfp(jnp.ones((5, 4)), nu=2).shape)
      (5, 16)

    References:
      Schlag, Irie & Schmidhuber, *Linear Transformers Are Secretly Fast Weight Programmers*,
      ICML 2021, eq. 33.
    """
    fn = "kjax.attention.dpfp"
    x = _prep(fn, x)
    nu = check_int(fn, "nu", nu, minimum=1)
    r = jax.nn.relu(jnp.concatenate([x, -x], axis=-1))
    return jnp.concatenate([r * jnp.roll(r, i, axis=-1) for i in range(1, nu + 1)], axis=-1)


def taylor2(x: Float[ArrayLike, "... D"]) -> Float[Array, "... F"]:
    r"""Second-order Taylor features of the exponential kernel.

    .. math:: \phi(x) = \Big[1,\; x,\; \tfrac{1}{\sqrt2}\,\mathrm{vec}(x x^\top)\Big],\qquad
        \phi(x)^\top\phi(y) = 1 + x^\top y + \tfrac12 (x^\top y)^2 > 0.

    Args:
      x: ``[..., D]`` inputs (scale by :math:`D^{-1/4}` for temperature :math:`1/\sqrt D`).

    Returns:
      ``[..., 1 + D + D^2]`` features, dtype of ``x``.

    Raises:
      TypeError: complex inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.attention import taylor2
      >>> x = jnp.array([0.5, -1.0])
      >>> print(bool(jnp.isclose(taylor2(x) @ taylor2(x), 1 + 1.25 + 1.25**2 / 2)))
      True

    References:
      Zhang et al., *The Hedgehog & the Porcupine*, ICLR 2024, sec. 3; Arora et al., *Simple linear
      attention language models balance the recall-throughput tradeoff* (Based), ICML 2024.
    """
    x = _prep("kjax.attention.taylor2", x)
    outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], -1) / math.sqrt(2.0)
    return jnp.concatenate([jnp.ones_like(x[..., :1]), x, outer], axis=-1)


class HedgehogParams(NamedTuple):
    """Parameters of :func:`hedgehog` (see :func:`init_hedgehog`), a pytree of two arrays.

    Attributes:
      w: ``[D, M]`` projection.
      b: ``[M]`` bias.
    """

    w: jax.Array
    b: jax.Array

    def __getitem__(self, key):
        if isinstance(key, str):
            return _deprecated_item(self, key)
        return tuple.__getitem__(self, key)


class LearnedSpectralParams(NamedTuple):
    r"""Parameters of :func:`learned_spectral` (see :func:`init_learned_spectral`), each ``[M, D]``.

    Attributes:
      mu: means of the frequencies.
      log_sigma: log standard deviations of the frequencies.
      noise: the fixed standard-normal draw :math:`\epsilon` (gets no gradient).
    """

    mu: jax.Array
    log_sigma: jax.Array
    noise: jax.Array

    def __getitem__(self, key):
        if isinstance(key, str):
            return _deprecated_item(self, key)
        return tuple.__getitem__(self, key)


def _deprecated_item(params, key: str):
    """``params["w"]``: the dict access of earlier versions, kept with a DeprecationWarning."""
    name = type(params).__name__
    if key not in params._fields:
        raise KeyError(key)
    warnings.warn(f"{name}[{key!r}] is deprecated: learned parameters are NamedTuples now; "
                  f"use `params.{key}`.", DeprecationWarning, stacklevel=3)
    return getattr(params, key)


def _as_params(fn: str, arg: str, params, cls, init: str, stacklevel: int):
    """``params`` as ``cls``; the old dict form is converted with a DeprecationWarning."""
    fields = cls._fields
    if isinstance(params, Mapping):
        if set(params) != set(fields):
            fail(fn, arg, f"be a {cls.__name__}{fields} (see {init})", f"a dict with keys {sorted(params)}",
                 cls=KjaxTypeError)
        warnings.warn(f"{fn}: `{arg}` as a dict is deprecated; pass kjax.attention.{cls.__name__} "
                      f"(what {init} returns).", DeprecationWarning, stacklevel=stacklevel + 1)
        params = cls(**params)
    if not isinstance(params, cls):
        fail(fn, arg, f"be a {cls.__name__}{fields} (see {init})", type(params).__name__, cls=KjaxTypeError)
    return cls(*(dtypes.as_float_array(fn, f"{arg}.{f}", getattr(params, f)) for f in fields))


def as_hedgehog_params(fn: str, arg: str, d: int, params, *, stacklevel: int = 3) -> HedgehogParams:
    """Validate :func:`hedgehog`'s parameters for inputs of size ``d`` (errors name ``fn``, ``arg``)."""
    p = _as_params(fn, arg, params, HedgehogParams, "kjax.attention.init_hedgehog", stacklevel)
    if p.w.ndim != 2 or p.w.shape[0] != d or p.w.shape[1] == 0:
        fail(fn, f"{arg}.w", f"have shape ({d}, M) with M >= 1, matching x's D", f"shape {p.w.shape}")
    if p.b.shape != (p.w.shape[1],):
        fail(fn, f"{arg}.b", f"have shape ({p.w.shape[1]},)", f"shape {p.b.shape}")
    return p


def as_spectral_params(fn: str, arg: str, d: int, params, *, stacklevel: int = 3) -> LearnedSpectralParams:
    """Validate :func:`learned_spectral`'s parameters for inputs of size ``d``."""
    p = _as_params(fn, arg, params, LearnedSpectralParams, "kjax.attention.init_learned_spectral", stacklevel)
    for f in p._fields:
        check_projection(fn, d, getattr(p, f), f"{arg}.{f}")
    if not (p.mu.shape == p.log_sigma.shape == p.noise.shape):
        fail(fn, arg, "hold mu, log_sigma and noise of one shape (M, D)",
             f"{p.mu.shape}, {p.log_sigma.shape}, {p.noise.shape}")
    return p


def init_hedgehog(key: jax.Array, dim: int, num_features: int | None = None, *,
                  dtype: Any = None) -> HedgehogParams:
    r"""Parameters of :func:`hedgehog`: ``HedgehogParams(w: [D, M], b: [M])``.

    ``w`` starts at the identity (padded or cut to ``[D, M]``) plus a small Gaussian perturbation
    drawn from ``key``, ``b`` at zero, as in the paper (the map starts near softmax of the input).

    Args:
      key: PRNG key.
      dim: input dimension ``D``.
      num_features: ``M`` (default ``D``); :func:`hedgehog` returns ``2M`` features.
      dtype: a real floating parameter dtype (default: the default float).

    Returns:
      A :class:`HedgehogParams` (a NamedTuple: a pytree that jit, grad and optax take as is).

    Raises:
      ValueError: ``dim`` or ``num_features`` < 1.
      TypeError: ``key`` not a PRNG key; ``dtype`` not a real floating dtype.

    Example:
      >>> import jax
      >>> from kjax.attention import init_hedgehog
      >>> p = init_hedgehog(jax.random.key(0), 4, 8)
      >>> print(p.w.shape, p.b.shape)
      (4, 8) (8,)

    References:
      Zhang et al., *The Hedgehog & the Porcupine: Expressive Linear Attentions with Softmax
      Mimicry*, ICLR 2024.
    """
    fn = "kjax.attention.init_hedgehog"
    check_key(fn, key)
    dim = check_int(fn, "dim", dim, minimum=1)
    m = dim if num_features is None else check_int(fn, "num_features", num_features, minimum=1)
    dtype = float_dtype(fn, "dtype", dtype)
    w = jnp.eye(dim, m, dtype=dtype) + 0.01 * jax.random.normal(key, (dim, m), dtype)
    return HedgehogParams(w=w, b=jnp.zeros((m,), dtype))


def hedgehog(params: HedgehogParams, x: Float[ArrayLike, "... D"]) -> Float[Array, "... 2M"]:
    r"""The Hedgehog learnable feature map.

    .. math:: \phi(x) = \big[\mathrm{softmax}(W^\top x + b),\ \mathrm{softmax}(-W^\top x - b)\big]
        \in \mathbb R_{>0}^{2M}

    (softmax over the feature axis), trained so that linear attention mimics softmax attention.

    Args:
      params: :class:`HedgehogParams` ``(w: [D, M], b: [M])`` (see :func:`init_hedgehog`). The
        dict ``{"w": ..., "b": ...}`` of earlier versions is accepted with a ``DeprecationWarning``.
      x: ``[..., D]`` inputs.

    Returns:
      ``[..., 2M]`` positive features, dtype of ``x``.

    Raises:
      ValueError: parameters of the wrong shapes; ``D = 0``.
      TypeError: ``params`` not a :class:`HedgehogParams`; complex inputs.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.attention import hedgehog, init_hedgehog
      >>> p = init_hedgehog(jax.random.key(0), 4, 8)
      >>> phi = hedgehog(p, jnp.ones((3, 4)))
      >>> print(phi.shape, bool(jnp.allclose(phi.sum(-1), 2.0)))
      (3, 16) True

    References:
      Zhang et al., *The Hedgehog & the Porcupine: Expressive Linear Attentions with Softmax
      Mimicry*, ICLR 2024, eq. 5.
    """
    fn = "kjax.attention.hedgehog"
    x = _prep(fn, x)
    w, b = as_hedgehog_params(fn, "params", x.shape[-1], params)
    z = _project(x, w.T) + b
    out = jnp.concatenate([jax.nn.softmax(z, axis=-1), jax.nn.softmax(-z, axis=-1)], axis=-1)
    return out.astype(x.dtype)


def init_learned_spectral(key: jax.Array, dim: int, num_features: int, *, lengthscale: float = 1.0,
                          dtype: Any = None) -> LearnedSpectralParams:
    r"""Parameters of :func:`learned_spectral`: ``LearnedSpectralParams(mu, log_sigma, noise)``,
    each ``[M, D]``.

    Starts at the Gaussian kernel of the given lengthscale: ``mu = 0``,
    ``log_sigma = -log(lengthscale)``, and ``noise`` a fixed standard-normal draw from ``key``
    (redraw by calling again with a new key).

    Args:
      key: PRNG key.
      dim: input dimension ``D``.
      num_features: number of frequencies ``M`` (:func:`learned_spectral` returns ``2M`` features).
      lengthscale: initial lengthscale (> 0).
      dtype: a real floating parameter dtype (default: the default float).

    Returns:
      A :class:`LearnedSpectralParams` (a NamedTuple pytree).

    Raises:
      ValueError: ``dim`` or ``num_features`` < 1; ``lengthscale <= 0`` or not finite.
      TypeError: ``key`` not a PRNG key; ``dtype`` not a real floating dtype.

    Example:
      >>> import jax
      >>> from kjax.attention import init_learned_spectral
      >>> p = init_learned_spectral(jax.random.key(0), 4, 8)
      >>> print(p._fields, p.mu.shape)
      ('mu', 'log_sigma', 'noise') (8, 4)

    References:
      Chowdhury et al., *Learning the Transformer Kernel*, TMLR 2022.
    """
    fn = "kjax.attention.init_learned_spectral"
    check_key(fn, key)
    dim = check_int(fn, "dim", dim, minimum=1)
    m = check_int(fn, "num_features", num_features, minimum=1)
    check_positive(fn, "lengthscale", lengthscale)
    dtype = float_dtype(fn, "dtype", dtype)
    return LearnedSpectralParams(
        mu=jnp.zeros((m, dim), dtype),
        log_sigma=jnp.full((m, dim), -jnp.log(jnp.asarray(lengthscale, dtype)), dtype),
        noise=jax.random.normal(key, (m, dim), dtype),
    )


def learned_spectral(params: LearnedSpectralParams, x: Float[ArrayLike, "... D"]) -> Float[Array, "... 2M"]:
    r"""Random Fourier features with a learned spectral distribution (Kernelized Transformer).

    The frequencies are reparameterised samples :math:`w_m = \mu_m + \sigma_m \odot \epsilon_m` of a
    learned diagonal-Gaussian spectral density (``noise`` :math:`\epsilon` is fixed and gets no
    gradient), and

    .. math:: \phi(x) = \frac{1}{\sqrt M}\big[\cos(Wx), \sin(Wx)\big],\qquad
        \phi(x)^\top\phi(y) = \frac1M \sum_m \cos\big(w_m^\top (x - y)\big)

    estimates the shift-invariant kernel whose spectral density is learned (at initialisation the
    Gaussian kernel). Features can be negative.

    Args:
      params: :class:`LearnedSpectralParams` ``(mu, log_sigma, noise)``, each ``[M, D]`` (see
        :func:`init_learned_spectral`). The dict of earlier versions is accepted with a
        ``DeprecationWarning``.
      x: ``[..., D]`` inputs.

    Returns:
      ``[..., 2M]`` features, dtype of ``x``.

    Raises:
      ValueError: parameters of the wrong shapes; ``D = 0``.
      TypeError: ``params`` not a :class:`LearnedSpectralParams`; complex inputs.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.attention import init_learned_spectral, learned_spectral
      >>> p = init_learned_spectral(jax.random.key(0), 4, 8)
      >>> phi = learned_spectral(p, jnp.ones((3, 4)))
      >>> print(phi.shape, bool(jnp.allclose((phi * phi).sum(-1), 1.0)))
      (3, 16) True

    References:
      Chowdhury, Zhang, Wang & Gunter, *Learning the Transformer Kernel*, TMLR 2022 (GMM-RKS with
      one component per frequency).
    """
    fn = "kjax.attention.learned_spectral"
    x = _prep(fn, x)
    mu, log_sigma, noise = as_spectral_params(fn, "params", x.shape[-1], params)
    w = mu + jnp.exp(log_sigma) * jax.lax.stop_gradient(noise)
    wx = _project(x, w)
    out = jnp.concatenate([jnp.cos(wx), jnp.sin(wx)], axis=-1) / math.sqrt(w.shape[0])
    return out.astype(x.dtype)
