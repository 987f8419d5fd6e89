"""Tests for fed/simulation.py and fed/partition.py: backends agree, padding is inert, privacy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fed import partition, simulation


def _loss_fn(shared, personal, batch, mask_b):
    pred_b = batch["x"] @ shared["w"] + shared["c"] + personal["b"]
    err_b = jnp.where(mask_b, (pred_b - batch["y"]) ** 2, 0.0)
    return jnp.sum(err_b), jnp.sum(mask_b).astype(jnp.float32)


def _clients(num, seed=0, sizes=(5, 9, 3)):
    rng = np.random.default_rng(seed)
    out = []
    for c in range(num):
        n = sizes[c % len(sizes)]
        x = rng.normal(size=(n, 3)).astype(np.float32)
        y = (x @ np.array([1.0, -2.0, 0.5]) + c).astype(np.float32)
        out.append({"x": x, "y": y})
    return out


def _shared():
    return {"w": jnp.zeros(3), "c": jnp.zeros(())}


def _personal(num):
    return {"b": jnp.arange(num, dtype=jnp.float32) * 0.1}


def _round(backend, block, personal_c, tx=None, **kw):
    work = simulation.make_sgd_client_work(_loss_fn, 0.1)
    alg = simulation.make_fed_avg(work, tx or simulation.fed_avg_tx(), backend=backend, **kw)
    state = alg.init(_shared())
    state, personal_c, metrics = alg.apply(state, block, personal_c, jax.random.key(0))
    return state, personal_c, metrics


@pytest.mark.parametrize("tx", [simulation.fed_avg_tx(), simulation.fed_adam_tx(0.05)])
def test_vmap_equals_loop(tx):
    block = partition.make_block(_clients(3), batch_size=2, num_steps=3)
    s_v, p_v, m_v = _round("vmap", block, _personal(3), tx)
    s_l, p_l, m_l = _round("loop", block, _personal(3), tx)
    for a, b in zip(jax.tree.leaves(s_v.shared), jax.tree.leaves(s_l.shared), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p_v["b"], p_l["b"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_v["weight"], m_l["weight"])
    assert float(m_v["weight"]) == 5 + 6 + 3  # client 1 has 9 examples but only 6 slots


def test_fedavg_is_weighted_mean_of_client_models():
    # With server lr 1, FedAvg's new params equal the example-weighted mean of the client models.
    clients = _clients(3)
    block = partition.make_block(clients, batch_size=2, num_steps=3)
    state, _, _ = _round("vmap", block, _personal(3))
    models, weights = [], []
    for c in range(3):
        single = partition.make_block([clients[c]], batch_size=2, num_steps=3)
        s, _, m = _round("loop", single, {"b": _personal(3)["b"][c : c + 1]})
        models.append(s.shared["w"])
        weights.append(float(m["weight"]))
    expected = np.average(np.stack(models), axis=0, weights=weights)
    np.testing.assert_allclose(state.shared["w"], expected, rtol=1e-5, atol=1e-6)


def test_padding_changes_nothing():
    clients = _clients(3)
    tight = partition.make_block(clients, batch_size=2, num_steps=3)
    # Padded to 6 clients and 5 steps: extra clients and batches are fully masked.
    padded = partition.make_block(clients, batch_size=2, num_steps=5, block_size=6)
    # make the masked slots hold garbage so that only the mask protects the result
    padded = padded._replace(
        batches={
            k: np.where(
                padded.mask_csb.reshape(padded.mask_csb.shape + (1,) * (v.ndim - 3)), v, 1e3
            ).astype(v.dtype)
            for k, v in padded.batches.items()
        }
    )
    # drop the extra real examples that 5 steps would see, to compare the same data
    mask = padded.mask_csb.copy()
    mask[:, 3:] = False
    padded = padded._replace(mask_csb=mask)
    s_t, p_t, _ = _round("vmap", tight, _personal(3))
    s_p, p_p, _ = _round("vmap", padded, _personal(6))
    for a, b in zip(jax.tree.leaves(s_t.shared), jax.tree.leaves(s_p.shared), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(p_p["b"][:3], p_t["b"], rtol=1e-6)
    np.testing.assert_allclose(p_p["b"][3:], _personal(6)["b"][3:])  # padded clients untouched


def test_personal_tree_never_aggregated(monkeypatch):
    seen = []
    real = simulation.aggregate_block

    def spy(deltas_c, weights_c):
        seen.append(jax.tree.structure(deltas_c))
        return real(deltas_c, weights_c)

    monkeypatch.setattr(simulation, "aggregate_block", spy)
    block = partition.make_block(_clients(3), batch_size=2, num_steps=3)
    for backend in ("vmap", "loop"):
        seen.clear()
        state, personal_c, _ = _round(backend, block, _personal(3))
        assert seen and all(s == jax.tree.structure(_shared()) for s in seen)
        assert set(state.shared) == {"w", "c"}
        # personal params stay per-client and differ (trained locally, not averaged)
        assert personal_c["b"].shape == (3,) and len(np.unique(np.asarray(personal_c["b"]))) == 3


def test_dp_fedavg_clips_each_client():
    block = partition.make_block(_clients(3), batch_size=2, num_steps=3)
    s, _, m = _round("vmap", block, _personal(3), dp_clip=1e-3, dp_noise_multiplier=0.0)
    # the mean of three updates of norm <= S has norm <= S
    assert float(optax.global_norm(s.shared)) <= 1e-3 + 1e-7
    assert float(m["weight"]) == 3.0
    s_l, _, _ = _round("loop", block, _personal(3), dp_clip=1e-3, dp_noise_multiplier=0.0)
    np.testing.assert_allclose(s.shared["w"], s_l.shared["w"], rtol=1e-5, atol=1e-9)


def test_dirichlet_partition_covers_and_skews():
    labels = np.repeat(np.arange(4), 250)
    shards = partition.dirichlet_partition(labels, 10, alpha=0.1, seed=0)
    allidx = np.sort(np.concatenate(shards))
    np.testing.assert_array_equal(allidx, np.arange(1000))
    # small alpha: most clients are dominated by one label
    top_share = [
        np.bincount(labels[s], minlength=4).max() / max(len(s), 1) for s in shards if len(s)
    ]
    assert np.median(top_share) > 0.7
    iid = partition.dirichlet_partition(labels, 10, alpha=1000.0, seed=0)
    iid_share = [np.bincount(labels[s], minlength=4).max() / len(s) for s in iid]
    assert np.median(iid_share) < 0.4
    again = partition.dirichlet_partition(labels, 10, alpha=0.1, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))
