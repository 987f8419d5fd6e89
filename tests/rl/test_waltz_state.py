"""WaltzRL two-agent state: one compiled update for both agents, the stage-1 freeze, the KL."""

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from configs import common
from rl import waltz_world as w
from rl.waltz import (
    ROLES,
    agent_optimizer,
    build_agents,
    create_state,
    make_agent_loss,
    make_agent_update,
    trees_equal,
    waltz_update,
)
from rl.waltz_protocol import assemble, run_protocol
from rl.waltz_rewards import rewards


def scripted_conversation(ctx, mask, seed):
    """First answers comply; revisions refuse (fixed behaviour log-probs)."""
    mode = np.where(np.any(ctx == w.REV, axis=1), w.REFUSE, w.COMPLY)
    toks = np.stack([mode, np.full_like(mode, w.EOS), np.full_like(mode, w.PAD)], 1)
    return toks.astype(np.int32), np.where(toks != w.PAD, -0.7, 0.0).astype(np.float32)


def scripted_feedback(rows):
    def fn(ctx, mask, seed):
        out = np.full((len(rows), w.FEEDBACK_NEW), w.PAD, np.int32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out, np.where(out != w.PAD, -0.5, 0.0).astype(np.float32)

    return fn


@pytest.fixture(scope="module")
def setup():
    model = common.tiny_model(common.model_config(max_len=32))
    graphdef, params, rest = build_agents(model, w.VOCAB, 0)
    optims = {
        "conversation": mlc.ConfigDict(dict(lr=1e-2, clip_norm=1.0)),
        "feedback": mlc.ConfigDict(dict(lr=3e-2, clip_norm=1.0)),
    }
    update = make_agent_update(
        graphdef, agent_optimizer(optims["conversation"]), clip_eps=0.2, kl_coef=0.1
    )
    prompts, types = w.make_prompts(8, 0, "train")
    fb = w.feedback_tokens(w.R_HARM, True, False, w.H_REFUSE)
    traj, rec = run_protocol(scripted_conversation, scripted_feedback([fb] * 8), prompts, types, 0)
    batches, _ = assemble(rec, traj, rewards(traj, alpha=1, lam=0.5, gamma=0.5), seed=0)
    return graphdef, params, rest, optims, update, batches


def fresh(setup):
    _, params, rest, optims, _, _ = setup
    copy = {r: jax.tree.map(jnp.array, params[r]) for r in ROLES}
    return create_state(copy, rest, optims, jax.random.key(0))


def test_roles_have_their_own_optimizer_and_reference(setup):
    state = fresh(setup)
    assert set(state.params) == set(state.opt_state) == set(state.frozen["ref"]) == set(ROLES)
    lr = {r: float(state.opt_state[r][1].hyperparams["learning_rate"]) for r in ROLES}
    assert lr == pytest.approx({"conversation": 1e-2, "feedback": 3e-2})


def test_one_compile_for_both_agents_and_stage1_freezes_conversation(setup):
    update, batches = setup[4], setup[5]
    state = fresh(setup)
    conv0 = jax.tree.map(np.asarray, state.params["conversation"])
    opt0 = jax.tree.map(np.asarray, state.opt_state["conversation"])
    fb0 = jax.tree.map(np.asarray, state.params["feedback"])
    for _ in range(2):  # stage 1: the conversation role is not updated at all
        state, m = waltz_update(state, update, batches, train_conversation=False)
    assert "conversation/loss" not in m and np.isfinite(float(m["feedback/loss"]))
    assert trees_equal(conv0, state.params["conversation"])
    assert trees_equal(opt0, state.opt_state["conversation"])
    assert not trees_equal(fb0, state.params["feedback"])
    for _ in range(2):  # stage 2: both agents, same compiled function
        state, m = waltz_update(state, update, batches, train_conversation=True)
    assert not trees_equal(conv0, state.params["conversation"])
    assert update.traces == 1
    assert int(state.step) == 4 and int(state.skipped) == 0


def test_kl_has_a_gradient_and_vanishes_at_the_reference(setup):
    graphdef, params, rest, _, _, batches = setup
    loss_fn = make_agent_loss(graphdef, clip_eps=0.2, kl_coef=1.0)
    b = {k: jnp.asarray(v) for k, v in batches["feedback"].items()}
    b["adv"] = jnp.zeros_like(b["adv"])  # only the KL term is left
    p = params["feedback"]
    moved = jax.tree.map(lambda x: x + 0.05 * jnp.sign(x), p)

    def loss(q):
        s, d, aux = loss_fn(q, p, rest, b)
        return s / d, aux

    vg = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (l0, aux0), g0 = vg(p)
    (l1, aux1), g1 = vg(moved)
    assert float(aux0["kl"]) == pytest.approx(0.0, abs=1e-6)
    norm = lambda g: float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g))))  # noqa: E731
    assert float(aux1["kl"]) > 0 and float(l1) > 0
    assert norm(g1) > 1e-3 and norm(g0) < 1e-3 * norm(g1)  # zero up to rounding at pi = pi_ref


@pytest.mark.slow
def test_protocol_with_real_samplers_reproduces_per_seed(setup):
    from rl.sampling.autoregressive import make_sampler

    graphdef, params, rest = setup[0], setup[1], setup[2]

    def agent(n, p):
        s = make_sampler(graphdef, max_new_tokens=n, eos_id=w.EOS, pad_id=w.PAD)

        def fn(ctx, mask, seed):
            out = s(p, rest, ctx, mask, jax.random.key(seed))
            return np.asarray(out.tokens), np.asarray(out.logp)

        return fn

    conv = agent(w.ANSWER_NEW, params["conversation"])
    fb = agent(w.FEEDBACK_NEW, params["feedback"])
    prompts, types = w.make_prompts(8, 1, "test")
    a, ra = run_protocol(conv, fb, prompts, types, 5)
    b, rb = run_protocol(conv, fb, prompts, types, 5)
    c, _ = run_protocol(conv, fb, prompts, types, 6)
    for k in ("c0", "f0", "c1", "lp_c0", "lp_f0"):
        np.testing.assert_array_equal(ra[k], rb[k])
    np.testing.assert_array_equal(a.revised, b.revised)
    assert not np.array_equal(ra["f0"], c.f0)
