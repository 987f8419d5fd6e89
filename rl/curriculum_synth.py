"""The spec's synthetic "skill vs difficulty" environment for PCL (arXiv:2510.01135; spec §5.1-2).

Each prompt i has a latent difficulty d_i and a visible feature (the one-hot of d_i's bin, plus
label noise so the value model has something to learn); the policy has one skill s and passes
prompt i with probability p_i = sigmoid(s − d_i). A step samples n Bernoulli(p_i) rewards for each
of m chosen prompts, computes GRPO group advantages, and raises the skill by `skill_lr` times the
effective ratio (learning progress comes only from mixed groups, the paper's p(1−p) argument).
The value model V_φ(x) = sigmoid(w·x + b) is trained by MSE on the group pass rates of the prompts
just rolled out, one step behind the policy, with the same `select_top_m` the LM runner uses.

Everything runs in milliseconds, for unit-level checks of the curriculum's claims: selected
prompts' true pass rates concentrate around τ, the value model's MSE falls, and with τ fixed the
true difficulty of the selected prompts rises as the skill grows.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rl import advantages as adv_lib
from rl import curriculum


@dataclasses.dataclass
class SynthConfig:
    num_prompts: int = 2000
    num_bins: int = 24
    d_range: tuple[float, float] = (-4.0, 8.0)
    skill0: float = 0.0
    skill_lr: float = 0.1
    m: int = 32
    n: int = 8
    k: int = 4
    tau: float = 0.5
    value_lr: float = 0.1
    steps: int = 60
    seed: int = 0


def make_pool(c: SynthConfig):
    """Difficulties d [N] and one-hot bin features [N, num_bins]."""
    rng = np.random.default_rng([c.seed, 1])
    d = rng.uniform(*c.d_range, c.num_prompts).astype(np.float32)
    edges = np.linspace(*c.d_range, c.num_bins + 1)[1:-1]
    feats = np.eye(c.num_bins, dtype=np.float32)[np.digitize(d, edges)]
    return d, feats


def pass_prob(skill: float, d) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(skill - np.asarray(d, np.float64))))


def make_value(c: SynthConfig):
    """(params, predict_fn, update_fn): logistic value model and its jitted MSE/Adam step."""
    params = {"w": jnp.zeros((c.num_bins,)), "b": jnp.zeros(())}
    tx = optax.adam(c.value_lr)

    def predict(p, x):
        return jax.nn.sigmoid(x @ p["w"] + p["b"])

    @jax.jit
    def update(p, opt, x, y):
        loss, g = jax.value_and_grad(lambda q: jnp.mean((predict(q, x) - y) ** 2))(p)
        u, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, u), opt, loss

    return params, tx.init(params), jax.jit(predict), update


def run(c: SynthConfig, curriculum_name: str = "pcl") -> dict[str, np.ndarray]:
    """Runs the loop; returns per-step arrays (selected true pass rates, difficulties, ...).

    Args:
      c: environment and curriculum settings.
      curriculum_name: "pcl" (value-model top-m around τ) or "uniform" (m prompts at random).

    Returns:
      dict with `p_sel [T, m]` (true pass rates of the selected prompts under the policy that
      rolled them out), `d_sel [T, m]`, `eff [T]`, `value_mse [T]` (V vs true p on the selected
      prompts, before the step's update), `skill [T+1]`, `target [T, m]` and `p_next [T, m]`
      (pass rates under the policy after the step, for the lag check).
    """
    if curriculum_name not in ("pcl", "uniform"):
        raise ValueError(f"unknown curriculum {curriculum_name!r}; expected 'pcl' or 'uniform'")
    d, feats = make_pool(c)
    vp, vopt, predict, update = make_value(c)
    select = jax.jit(lambda v: curriculum.select_top_m(v, c.tau, c.m)[0])
    skill = c.skill0
    out = {k: [] for k in ("p_sel", "d_sel", "eff", "value_mse", "target", "p_next")}
    skills = [skill]
    for t in range(c.steps):
        cand = curriculum.sample_candidates(c.num_prompts, c.k * c.m, c.seed, t)
        if curriculum_name == "pcl":
            v = predict(vp, feats[cand])
            sel = cand[np.asarray(select(v))]
        else:
            sel = cand[: c.m]
        p = pass_prob(skill, d[sel])
        rng = np.random.default_rng([c.seed, t, 2])
        r = (rng.random((c.m, c.n)) < p[:, None]).astype(np.float32)
        a = np.asarray(adv_lib.group_mean_std(jnp.asarray(r)))
        eff = curriculum.effective_ratio(a)
        out["value_mse"].append(float(np.mean((np.asarray(predict(vp, feats[sel])) - p) ** 2)))
        # The step: policy on (X_t, r) and value on ŷ from the same rollouts (π_t's pass rates).
        target = curriculum.group_pass_rate(r)
        skill = skill + c.skill_lr * eff
        vp, vopt, _ = update(vp, vopt, feats[sel], target)
        out["p_sel"].append(p)
        out["d_sel"].append(d[sel])
        out["eff"].append(eff)
        out["target"].append(target)
        out["p_next"].append(pass_prob(skill, d[sel]))
        skills.append(skill)
    res = {k: np.asarray(v) for k, v in out.items()}
    res["skill"] = np.asarray(skills)
    return res
