"""The selective diagonal SSM through decayed linear attention, its steps and its implicit attention
matrix, against a NumPy sequential scan in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kjax import ssm
from kjax._src.errors import KjaxError, KjaxTypeError
from tests.conformance import assert_close

BT, T, H, P, G, N = 2, 11, 4, 3, 2, 5
RNG = np.random.default_rng(3)
U = RNG.normal(size=(BT, T, H, P))
DT = np.log1p(np.exp(RNG.normal(size=(BT, T, H))))  # softplus, as the caller applies it
BM = RNG.normal(size=(BT, T, G, N))
CM = RNG.normal(size=(BT, T, G, N))
D = RNG.normal(size=H)
AS = {"scalar": -np.exp(RNG.normal(size=H)), "per_state": -np.exp(RNG.normal(size=(H, N)))}
H0 = RNG.normal(size=(BT, H, N, P))


def scan_oracle(u, dt, A, B, C, D=None, h0=None):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t^T, y_t = h_t^T C_t + D u_t, token by token."""
    bt, t, h, p = u.shape
    Bh, Ch = (np.repeat(x, h // x.shape[2], axis=2) for x in (B, C))
    st = np.zeros((bt, h, Bh.shape[-1], p)) if h0 is None else np.array(h0)
    y = np.zeros_like(u)
    for i in range(t):
        da = np.exp(dt[:, i, :, None] * (A[:, None] if A.ndim == 1 else A))  # [Bt, H, N]
        st = da[..., None] * st + dt[:, i, :, None, None] * Bh[:, i, :, :, None] * u[:, i, :, None, :]
        y[:, i] = np.einsum("bhnp,bhn->bhp", st, Ch[:, i]) + (0 if D is None else D[:, None] * u[:, i])
    return y, st


@pytest.mark.parametrize("a", ["scalar", "per_state"])
def test_selective_scan_equals_sequential_scan(a):
    A = AS[a]
    y, st = ssm.selective_scan(U, DT, A, BM, CM, D, initial_state=ssm.SelectiveScanState(H0), return_state=True,
                               chunk_size=4)
    want, h = scan_oracle(U, DT, A, BM, CM, D, H0)
    assert_close(y, want, 1e-10, "selective scan")
    assert_close(st.h, h, 1e-10, "final state")


@pytest.mark.parametrize("a", ["scalar", "per_state"])
def test_steps_equal_scan(a):
    A = AS[a]
    want, h = scan_oracle(U, DT, A, BM, CM, D, H0)

    def body(st, xs):
        y, st = ssm.selective_scan_step(st, *xs[:2], A, *xs[2:], D)
        return st, y

    xs = tuple(np.moveaxis(x, 1, 0) for x in (U, DT, BM, CM))
    st, ys = jax.jit(lambda st, xs: jax.lax.scan(body, st, xs))(ssm.SelectiveScanState(jnp.asarray(H0)), xs)
    assert_close(jnp.moveaxis(ys, 0, 1), want, 1e-10, "steps")
    assert_close(st.h, h, 1e-10, "step state")


@pytest.mark.parametrize("a", ["scalar", "per_state"])
def test_attention_matrix_reproduces_scan(a):
    A = AS[a]
    alpha = ssm.ssm_attention_matrix(DT, A, BM, CM)
    assert alpha.shape == (BT, H, T, T)
    assert np.all(np.triu(np.asarray(alpha), 1) == 0)
    want, _ = scan_oracle(U, DT, A, BM, CM, D)
    assert_close(jnp.einsum("bhts,bshp->bthp", alpha, U) + D[:, None] * U, want, 1e-10, "alpha @ u")


def test_lti_attention_matrix_is_toeplitz():
    """Constant dt, B, C (an LTI diagonal SSM, e.g. S4D with real A): alpha depends on t - s only,
    alpha[t, s] = dt C^T diag(exp(dt A (t - s))) B."""
    A = AS["per_state"]
    b, c = RNG.normal(size=(2, N))
    dt, Bm, Cm = (np.broadcast_to(x, shape) for x, shape in
                  ((0.3, (1, T, H)), (b, (1, T, H, N)), (c, (1, T, H, N))))
    alpha = np.asarray(ssm.ssm_attention_matrix(dt, A, Bm, Cm))[0]
    lag = np.arange(T)[:, None] - np.arange(T)[None, :]
    want = 0.3 * np.einsum("n,hln,n->hl", c, np.exp(0.3 * A[:, None, :] * np.arange(T)[None, :, None]), b)
    assert_close(alpha, np.where(lag >= 0, want[:, np.clip(lag, 0, None)], 0), 1e-12, "Toeplitz")


def test_selective_scan_gradients():
    f = jax.jit(lambda u, dt, a, b, c: ssm.selective_scan(u, dt, a, b, c, chunk_size=4))
    check_grads(f, (U[:1, :6], DT[:1, :6], AS["scalar"], BM[:1, :6], CM[:1, :6]), order=1, modes=["rev"])


def test_bad_inputs():
    fn = "kjax.ssm.selective_scan"
    with pytest.raises(KjaxError, match=rf"{fn}: `A` must be <= 0"):
        ssm.selective_scan(U, DT, -AS["scalar"], BM, CM)
    with pytest.raises(KjaxError, match=rf"{fn}: `dt` must be >= 0"):
        ssm.selective_scan(U, -DT, AS["scalar"], BM, CM)
    with pytest.raises(KjaxError, match=rf"{fn}: `A` must have shape \[H\]"):
        ssm.selective_scan(U, DT, np.ones(3), BM, CM)
    with pytest.raises(KjaxError, match=rf"{fn}: `B` must have shape \[Bt, T, G, N\].*G dividing H = 4"):
        ssm.selective_scan(U, DT, AS["scalar"], BM[:, :, :1].repeat(3, 2), CM)
    with pytest.raises(KjaxError, match=rf"{fn}: `initial_state` must have h of shape"):
        ssm.selective_scan(U, DT, AS["scalar"], BM, CM, initial_state=ssm.SelectiveScanState(H0[:1]))
    with pytest.raises(KjaxTypeError, match="kjax.ssm.selective_scan_step: `state` must be a SelectiveScanState"):
        ssm.selective_scan_step(H0, U[:, 0], DT[:, 0], AS["scalar"], BM[:, 0], CM[:, 0])
    with pytest.raises(KjaxError, match="kjax.ssm.ssm_attention_matrix: `C` must have"):
        ssm.ssm_attention_matrix(DT, AS["scalar"], BM, CM[:, :3])
