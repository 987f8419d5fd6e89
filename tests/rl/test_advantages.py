"""Advantage estimators: golden numbers on a 2x3 batch, invariances, masking."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rl import advantages as adv

R = np.array([[1.0, 0.0, 0.0], [2.0, 2.0, 5.0]], np.float32)


def test_golden_2x3():
    np.testing.assert_allclose(adv.group_mean(R), [[2 / 3, -1 / 3, -1 / 3], [-1, -1, 2]], atol=1e-6)
    # population std: group 0 sqrt(2)/3, group 1 sqrt(2)
    s0, s1 = np.sqrt(2) / 3, np.sqrt(2)
    np.testing.assert_allclose(
        adv.group_mean_std(R),
        [[(2 / 3) / s0, (-1 / 3) / s0, (-1 / 3) / s0], [-1 / s1, -1 / s1, 2 / s1]],
        atol=1e-5,
    )
    np.testing.assert_allclose(adv.rloo(R), [[1.0, -0.5, -0.5], [-1.5, -1.5, 3.0]], atol=1e-6)
    m, s = R.mean(), R.std()
    np.testing.assert_allclose(adv.batch_norm(R), (R - m) / s, atol=1e-5)


def test_rloo_is_scaled_group_mean():
    np.testing.assert_allclose(adv.rloo(R), 1.5 * adv.group_mean(R), atol=1e-6)


def test_equal_rewards_give_zero():
    r = np.full((3, 4), 0.7, np.float32)
    for name in adv.ESTIMATORS:
        np.testing.assert_allclose(adv.compute(name, r), 0.0, atol=1e-5)


def test_mask_excludes_samples():
    valid = np.array([[True, True, False], [True, False, False]])
    a = np.asarray(adv.rloo(R, valid))
    np.testing.assert_allclose(a, [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)
    g = np.asarray(adv.group_mean(R, valid))
    np.testing.assert_allclose(g, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)


def test_unknown_name():
    with pytest.raises(ValueError, match="bogus"):
        adv.compute("bogus", R)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=6, max_size=6), st.floats(-3, 3))
def test_shift_invariance(vals, c):
    r = np.asarray(vals, np.float32).reshape(2, 3)
    for name in ("group_mean", "rloo"):
        np.testing.assert_allclose(adv.compute(name, r + c), adv.compute(name, r), atol=1e-4)
    np.testing.assert_allclose(np.asarray(adv.group_mean(r)).sum(1), 0.0, atol=1e-4)


def test_numpy_backend_is_numpys_float32_group_mean():
    """The SPG rollouts' advantages go through the registry with `xp=numpy`: bit for bit the
    float32 `r - mean(r)` numpy computes, and close to the jax backend."""
    r = (np.random.default_rng(0).integers(0, 17, (64, 8)) / 7.0).astype(np.float32)
    a = adv.compute("group_mean", r, xp=np)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    np.testing.assert_array_equal(a, r - r.mean(axis=1, keepdims=True))
    for name in adv.ESTIMATORS:
        got = adv.compute(name, r, xp=np)
        np.testing.assert_allclose(got, np.asarray(adv.compute(name, r)), atol=1e-5)
