"""The status enum (kjax._src.status): codes, names, messages, precedence, use inside jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax import regression
from kjax._src import status as st
from kjax._src.status import Status


def test_codes_names_and_messages():
    # the meanings of 0-3 are public (kjax.regression states and docs) and stay
    assert [int(s) for s in Status] == list(range(7))
    assert (Status.OK, Status.NONFINITE_INPUT, Status.JITTER, Status.NOT_PSD) == (0, 1, 2, 3)
    assert st.status_name(0) == "ok"
    assert st.status_name(np.int32(1)) == "non-finite input"
    assert st.status_name(jnp.asarray(2, jnp.int32)) == "jitter added (matrix not numerically PSD)"
    assert st.status_name(3).startswith("factorisation failed")
    assert st.status_name(Status.MAX_ITER) == "stopped at maxiter before reaching tol"
    assert st.status_name(99) == "unknown status 99"
    for s in Status:
        assert st.status_name(s) == st.NAMES[s] and st.status_message(s) == st.MESSAGES[s]
    assert "maxiter" in st.status_message(4)
    # the public re-export is the same function
    assert regression.status_name is st.status_name


def test_status_name_rejects_traced_and_non_integer_values():
    with pytest.raises(TypeError, match=r"kjax.regression.status_name: `status` must be concrete"):
        jax.jit(lambda s: st.status_name(s) and s)(jnp.asarray(1))
    for bad in (2.5, np.array([1, 2]), "ok"):
        with pytest.raises(TypeError, match=r"kjax.regression.status_name: `status` must be an integer scalar"):
            st.status_name(bad)


def test_combine_precedence_and_jit():
    assert int(st.combine(0, 2, 4)) == Status.MAX_ITER
    assert int(st.combine(4, 3, 5)) == Status.NOT_PSD
    assert int(st.combine(3, 1)) == Status.NONFINITE_INPUT
    assert int(st.combine(6, 2)) == Status.JITTER
    assert int(st.combine(0, 0)) == Status.OK

    @jax.jit
    def f(x):
        code = st.nonfinite_input(x)
        code = st.where(jnp.sum(x) > 10, Status.MAX_ITER, code)
        return code, code == Status.MAX_ITER

    code, is_max = f(jnp.array([1.0, 20.0]))
    assert int(code) == 4 and bool(is_max)
    assert int(f(jnp.array([1.0, jnp.nan]))[0]) == Status.NONFINITE_INPUT
    assert int(st.nonfinite_values(jnp.array([jnp.inf]))) == Status.NONFINITE_VALUES
    assert int(st.nonfinite_input(None)) == Status.OK
