"""AR RL runner: JEPO row construction (cut at the marker, answer tokenised alone), pulse runs."""

import importlib

import numpy as np
import pytest

from data.tokenizer import CharTokenizer
from rl.run_ar import cut_at_marker, jepo_rows


def test_cut_at_marker():
    m = "the final answer is"
    assert cut_at_marker("1+2=3; The final answer is 3", m) == "1+2=3; The final answer is"
    assert cut_at_marker("the final answer is 1; the final answer is 2", m) == (
        "the final answer is 1; the final answer is"
    )
    assert cut_at_marker("no marker here", m) is None
    assert cut_at_marker("a task without a marker", "") is None


class RC:
    max_new_tokens, max_answer_tokens = 12, 4


def test_jepo_rows_layout():
    tok = CharTokenizer()
    pt = np.array([[0, 1] + tok.encode("5=")], np.int32).repeat(2, 0)
    pm = pt != 0
    gens = ["1 the final answer is 7", "junk"]
    gen = np.zeros((2, 30), np.int32)
    gmask = np.zeros((2, 30), bool)
    for i, g in enumerate(gens):
        ids = tok.encode(g, add_eos=True)
        gen[i, : len(ids)], gmask[i, : len(ids)] = ids, True
    rc = RC()
    rows = jepo_rows(pt, pm, gen, gmask, [5, 5], tok, rc, "the final answer is")
    p = pt.shape[1]
    assert rows["tokens"].shape == (2, p + 12 + 4)
    assert rows["valid"].tolist() == [True, False]
    # Row 0: c = "1 the final answer is" cut to the 12-token budget, then " 5" + eos.
    c_ids = tok.encode("1 the final answer is")[:12]
    np.testing.assert_array_equal(rows["tokens"][0, p : p + 12], c_ids)
    np.testing.assert_array_equal(rows["tokens"][0, p + 12 : p + 15], tok.encode(" 5") + [2])
    assert rows["cot_mask"][0].sum() == 12 and rows["ans_mask"][0].sum() == 3
    assert not (rows["cot_mask"] & rows["ans_mask"]).any()
    assert (rows["mask"] >= rows["cot_mask"] | rows["ans_mask"]).all()
    # Row 1 (no marker): the whole text is c, answer still appended for scoring.
    np.testing.assert_array_equal(rows["tokens"][1, p : p + 4], tok.encode("junk"))
    assert rows["cot_mask"][1].sum() == 4 and rows["ans_mask"][1].sum() == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,arg",
    [("jepo", "tiny,reward=exact,multi=0,kl=0.001"), ("grpo", "tiny,objective=rloo,kl=0.01")],
)
def test_pulse_variants(name, arg, tmp_path):
    from rl.run_ar import run

    c = importlib.import_module(f"configs.{name}").get_config(arg)
    c.lock()
    out = run(c, str(tmp_path))
    assert 0.0 <= out["after/accuracy"] <= 1.0 and np.isfinite(out["after/answer_ll"])
    assert out["skipped"] == 0
    assert (tmp_path / "plot.png").exists()


@pytest.fixture(scope="module")
def tiny_rollouts():
    """A random tiny policy and the runner's Rollouts on tiny arithmetic (no SFT)."""
    import jax

    from configs.grpo import get_config
    from rl.run_ar import Rollouts
    from train.lm import build_transformer
    from train.sft import make_task_and_tokenizer
    from train.state import split_module

    c = get_config("tiny")
    c.rl.update(prompts_per_step=4, group_size=4, max_new_tokens=8, kl_coef=0.0)
    c.rl.update(num_eval=5, eval_batch_size=5, eval_samples=3)
    task, tok = make_task_and_tokenizer(c)
    # A reward with several values per group, so that a shuffle is visible.
    task.reward = lambda text, ex: float(len(text) % 3)
    model = build_transformer(c.model, tok.vocab_size, 0, causal=True, max_len=64)
    graphdef, params, rest = split_module(model)
    return c, graphdef, params, rest, Rollouts(c, graphdef, task, tok), jax


def _state(c, params, rest, jax):
    from rl.run_ar import rl_optimizer
    from train.state import TrainState

    return TrainState.create(
        {"policy": params}, rl_optimizer(c), jax.random.key(0), {"policy": rest}
    )


def test_shuffle_control_keeps_each_groups_rewards(tiny_rollouts):
    c, _, params, rest, roll, jax = tiny_rollouts
    state = _state(c, params, rest, jax)
    n, moved = c.rl.group_size, 0
    for step in range(2):
        roll.rc.control = "none"
        plain, _ = roll.batch(state, step)
        roll.rc.control = "shuffle"
        shuf, _ = roll.batch(state, step)
        np.testing.assert_array_equal(plain["tokens"], shuf["tokens"])  # same prompts and keys
        a, b = plain["adv"].reshape(-1, n), shuf["adv"].reshape(-1, n)
        np.testing.assert_allclose(np.sort(a, 1), np.sort(b, 1), atol=1e-6)
        moved += int((np.abs(a - b) > 1e-6).any())
    roll.rc.control = "none"
    assert moved > 0, "the shuffle never changed which completion got which reward"


def test_lr0_control_leaves_parameters_bitwise_unchanged(tiny_rollouts):
    """The same nonzero GRPO gradient moves the parameters under control=none, not under lr0."""
    import jax.numpy as jnp
    import optax

    from rl import objectives
    from rl.run_ar import rl_optimizer

    c, graphdef, params, rest, roll, jax = tiny_rollouts
    state = _state(c, params, rest, jax)
    batch, _ = roll.batch(state, 0)
    assert np.abs(batch["adv"]).max() > 0
    from rl.run_ar import RUNNER_FIELDS

    loss = objectives.build(c.rl, graphdef, runner_fields=RUNNER_FIELDS).loss_fn
    p = {"policy": params}
    g = jax.jit(jax.grad(lambda q: loss(q, {"policy": rest}, batch, None)[0]))(p)
    moved = {}
    for control in ("lr0", "none"):
        cc = c.copy_and_resolve_references()
        cc.rl.control, cc.rl_optim.warmup_steps = control, 0
        tx = rl_optimizer(cc)

        @jax.jit
        def two_steps(new, tx=tx):
            opt = tx.init(new)
            for _ in range(2):
                upd, opt = tx.update(g, opt, new)
                new = optax.apply_updates(new, upd)
            return new

        new = two_steps(p)
        same = jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), p, new)
        moved[control] = not all(jax.tree.leaves(same))
    assert moved == {"lr0": False, "none": True}


def test_eval_defaults_are_powered():
    from configs import grpo, jepo

    for mod in (grpo, jepo):
        rc = mod.get_config().rl
        assert rc.num_eval >= 512 and rc.eval_samples >= 4, mod.__name__
        assert mod.get_config("tiny").rl.num_eval < rc.num_eval  # fewer only in :tiny


@pytest.mark.slow
def test_eval_sizes_are_config_fields(tiny_rollouts, tmp_path):
    """Held-out sizes come from rl.num_eval / rl.eval_samples; the warm-start cache round-trips."""
    from rl import ar_eval

    c, _, params, rest, roll, jax = tiny_rollouts
    state = _state(c, params, rest, jax)
    scores = ar_eval.cached_evaluate(roll, state, str(tmp_path), c)
    assert scores["greedy"].shape == (5,) and scores["pass1"].shape == (5, 3)
    assert scores["answer_ll"].shape == (5,) and np.isfinite(scores["answer_ll"]).all()
    again = ar_eval.cached_evaluate(roll, state, str(tmp_path), c)
    for k, v in scores.items():
        np.testing.assert_array_equal(again[k], v)
    rows, table = ar_eval.change_report(scores, scores)
    assert {r["metric"] for r in rows} == set(ar_eval.METRICS) and "95% CI" in table


class Interrupt(RuntimeError):
    pass


@pytest.mark.slow  # ~20 s idle (3 tiny runs); tests/train/test_loop.py covers µ = 2 in `make test`
def test_interrupted_run_with_two_inner_steps_resumes_exactly(tmp_path, monkeypatch):
    """Issue 13: GRPO with µ = 2 inner updates per rollout batch, killed after the checkpoint at
    loop step 1 and rerun on its workdir, ends exactly like an uninterrupted run (a resume from
    the optimizer's update count, 2, would skip a rollout batch)."""
    import json

    from configs.grpo import get_config
    from rl import run_ar

    c = get_config("tiny")
    c.rl.update(inner_updates=2, steps=3, sft_dir=str(tmp_path / "sft"))  # one shared warm start
    c.ckpt_every = 1
    # A reward with several values per group, so that every update moves the policy.
    from data.tasks.arithmetic import Arithmetic

    def reward(self, text, example, compat="fixed"):
        return float(len(text) % 3)

    monkeypatch.setattr(Arithmetic, "reward", reward)
    real_batch = run_ar.Rollouts.batch
    full = run_ar.run(c, str(tmp_path / "full"))

    def crash_at_step_2(self, state, step):
        if step == 2:
            raise Interrupt
        return real_batch(self, state, step)

    monkeypatch.setattr(run_ar.Rollouts, "batch", crash_at_step_2)
    with pytest.raises(Interrupt):
        run_ar.run(c, str(tmp_path / "cut"))
    monkeypatch.setattr(run_ar.Rollouts, "batch", real_batch)
    resumed = run_ar.run(c, str(tmp_path / "cut"))
    assert resumed == full

    def rl_rows(wd):
        rows = [json.loads(x) for x in open(tmp_path / wd / "metrics.jsonl")]
        last = {}
        for r in rows:  # a resumed step's record replaces the interrupted run's
            if "rl/gen_len" in r:
                last[r["step"]] = r
        return [last[s] for s in sorted(last)]

    full_rows, cut_rows = rl_rows("full"), rl_rows("cut")
    assert len(full_rows) == 3 and cut_rows == full_rows
    assert any(r["train/grad_norm"] > 0 for r in full_rows)
