"""The vmap backend's shared local step 0 and the `share_char_encoder` option (issue 19 item 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import fed_oov
from fed import data, oov, partition, simulation
from models.word_lm import WordLM, WordLMConfig


def _word_lm_setup(num_clients=3):
    corpus = data.generate_corpus(num_clients=num_clients, sentences_per_client=(6, 12), seed=0)
    vocab = data.build_vocab(corpus.clients, 60, 1)
    w2i = {w: i for i, w in enumerate(vocab)}
    cfg = WordLMConfig(vocab_size=len(vocab), char_dim=4, filters=(4, 4, 4), d_emb=8, hidden=8)
    model = WordLM(cfg, data.chars_of(vocab, cfg.max_chars), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    examples = [oov.lm_examples(s, w2i, 10) for s in corpus.clients]
    return graphdef, params, rest, examples


def _scan_only_runner(work):
    """The vmap runner before local step 0 was taken out of the scan (the previous computation)."""

    def one_client(shared, personal, batches, mask_sb, rng, extra):
        cstate = work.init(shared, personal, rng)
        cstate, _ = jax.lax.scan(
            lambda c, xs: (work.step(c, *xs), None), cstate, (batches, mask_sb)
        )
        return work.final(shared, cstate, extra)

    @jax.jit
    def run(shared, personal_c, block, rngs_c):
        out = jax.vmap(one_client, in_axes=(None, 0, 0, 0, 0, 0))(
            shared, personal_c, block.batches, block.mask_csb, rngs_c, block.extra
        )
        return simulation.aggregate_block(out.delta, out.weight), jnp.sum(out.weight)

    return run


@pytest.mark.parametrize("steps", [1, 3])
def test_vmap_shared_first_step_equals_previous_computation(steps):
    graphdef, params, rest, examples = _word_lm_setup()
    work = simulation.make_sgd_client_work(
        oov.make_loss_fn(graphdef, rest, adapter=False), 0.5, train_personal=False
    )
    block = partition.make_block(examples, batch_size=4, num_steps=steps, block_size=4)
    rngs = jax.random.split(jax.random.key(0), 4)
    wsum, wtotal, _, _ = simulation.make_vmap_runner(work)(params, {}, block, rngs)
    ref_wsum, ref_wtotal = _scan_only_runner(work)(params, {}, block, rngs)
    loop_wsum, _, _, _ = simulation.make_loop_runner(work)(params, {}, block, rngs)
    chunked = simulation.make_vmap_runner(work, client_chunk=3)  # 4 clients: a chunk + remainder
    chunk_wsum, _, _, _ = chunked(params, {}, block, rngs)
    assert float(wtotal) == float(ref_wtotal) > 0
    trees = (wsum, ref_wsum, loop_wsum, chunk_wsum)
    for a, *others in zip(*(jax.tree.leaves(t) for t in trees), strict=True):
        for b in others:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _server_params(lift, steps, backend="vmap"):
    graphdef, params, rest, examples = _word_lm_setup()
    share = lift is not None
    work = simulation.make_sgd_client_work(
        oov.make_loss_fn(graphdef, rest, adapter=False, share_char_encoder=share),
        0.5,
        train_personal=False,
    )
    alg = simulation.make_fed_avg(
        work,
        simulation.fed_avg_tx(),
        backend=backend,
        lift=oov.make_table_lift(graphdef, rest) if share else None,
    )
    block = partition.make_block(examples, batch_size=4, num_steps=steps)
    state, _, _ = alg.apply(alg.init(params), block, {}, jax.random.key(0))
    return params, state.shared


def test_share_char_encoder_is_exact_for_one_local_step():
    # One local step: the table gradient pulled back through the encoder's VJP is the exact
    # char-encoder gradient, so the option changes nothing.
    lift = object()  # any non-None value selects the option in _server_params
    _, exact = _server_params(None, 1)
    for backend in ("vmap", "loop"):
        _, shared = _server_params(lift, 1, backend)
        for a, b in zip(jax.tree.leaves(exact), jax.tree.leaves(shared), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_share_char_encoder_trains_the_encoder_and_differs_after_several_steps():
    params, exact = _server_params(None, 3)
    _, shared = _server_params(object(), 3)
    moved = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))), params["chars"], shared["chars"]
    )
    assert min(jax.tree.leaves(moved)) > 0  # the frozen encoder still learns at the server
    diff = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(*map(jax.tree.leaves, (exact, shared)))]
    assert max(diff) > 1e-6  # an approximation after the first local step, not exact FedAvg


def test_share_char_encoder_option_is_read(monkeypatch, tmp_path):
    from fed import experiment_oov

    seen = {}

    class Stop(Exception):
        pass

    def fake_fed_avg(work, tx, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(simulation, "make_fed_avg", fake_fed_avg)
    for flag in (False, True):
        c = fed_oov.get_config(f"tiny,share_char_encoder={flag}")
        assert c.fed.share_char_encoder is flag
        with pytest.raises(Stop):
            experiment_oov.run(c, str(tmp_path / str(flag)))
        assert (seen["lift"] is not None) is flag
