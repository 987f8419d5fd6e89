"""WaltzRL runner (`configs/waltz.py`): warm starts, stage 1, stage 2, baselines, evaluation.

Pipeline (arXiv:2510.08240, spec §3): SFT warm starts of both agents on the synthetic safety
world -> evaluation of the untrained pair and of the baselines (safeguard, oracle template
feedback) -> stage 1 (conversation agent frozen, alpha/lambda/gamma on) -> stage 2 (joint, lambda
= 0, DIR gated on the label) -> evaluation of the final answers on held-out prompts. Ablations are
config switches: `gate=False`, `frozen_conversation=True` (stage 2 trains only pi_f), and
`single=True` (a single-model safety RL baseline: pi_c alone on R_c of its first answer).

The run is the shared runtime's shape: `train.runtime.Runtime` (mesh from `config.mesh_shape`,
the two-agent state created sharded, restore), one `train.loop.fit` per RL stage (`collect` = one
protocol round on the stage's prompt draw, `inner_updates` updates, checkpoints in
`ckpt/stage<k>` at the loop step) and `train.runtime.finish` (result.json, plot.png, the systems
table). The update is WaltzRL's own (`rl.waltz.make_agent_update`): one compiled per-agent step
serves both roles with their own optimizer, denominator and skip, and stage 1 never calls it for
the conversation agent (bitwise frozen), which `Runtime.update_step`'s one optimizer over the
whole state and one joint skip cannot express without changing the logged per-agent metrics.

`bench/waltz.py` calls `warm_start`, `train_stage` and `evaluate` directly to share one warm start
and one stage 1 between the systems of a seed.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from rl.sampling.autoregressive import make_sampler
from rl.waltz import (
    ROLES,
    agent_optimizer,
    build_agents,
    create_state,
    make_agent_update,
    trees_equal,
    waltz_update,
)
from rl.waltz_protocol import assemble, run_protocol
from rl.waltz_rewards import Trajectories, metrics, rewards, safeguard
from rl.waltz_sft import conversation_data, feedback_data, make_sft_update, sft_agent
from rl.waltz_world import (
    ANSWER_NEW,
    EOS,
    FEEDBACK_NEW,
    JUDGES,
    PAD,
    REFUSE,
    VOCAB,
    classifier_judge,
    make_prompts,
)
from train.checkpoint import Checkpointer
from train.loop import fit
from train.runtime import Runtime, finish


class Agents:
    """The compiled pieces shared by every stage and evaluation of one model config."""

    def __init__(self, config):
        c = config
        if c.judge == "classifier":
            classifier_judge(c.classifier_dir)  # raises unless local weights exist
        self.judge = JUDGES[c.judge]
        self.graphdef, self.init_params, self.rest = build_agents(c.model, VOCAB, c.seed)
        knobs = dict(eos_id=EOS, pad_id=PAD, temperature=float(c.rl.temperature))
        self.samplers = {
            "conversation": make_sampler(self.graphdef, max_new_tokens=ANSWER_NEW, **knobs),
            "feedback": make_sampler(self.graphdef, max_new_tokens=FEEDBACK_NEW, **knobs),
        }
        self.sft_update = None  # built on first use (see `warm_start`)
        self.update = make_agent_update(
            self.graphdef,
            agent_optimizer(c.rl_optim.conversation),
            clip_eps=float(c.rl.clip_eps),
            kl_coef=float(c.rl.kl_coef),
        )

    def agent_fn(self, role: str, params):
        sampler = self.samplers[role]

        def fn(ctx, mask, seed):
            out = sampler(params, self.rest, ctx, mask, jax.random.key(seed))
            return np.asarray(out.tokens), np.asarray(out.logp)

        return fn


def warm_start(config, agents: Agents):
    """SFT of both agents; returns params {role: tree}."""
    c, sc = config, config.sft
    data = {
        "conversation": conversation_data(sc.num_train, c.seed),
        "feedback": feedback_data(sc.num_train, c.seed),
    }
    params = {}
    if agents.sft_update is None:
        agents.sft_update = make_sft_update(agents.graphdef, c.sft_optim)
    for i, role in enumerate(ROLES):
        p = jax.tree.map(lambda x: x.copy(), agents.init_params[role])
        params[role], _ = sft_agent(
            p, agents.rest, data[role], sft_update=agents.sft_update, steps=sc.steps,
            batch_size=sc.batch_size, seed=c.seed * 7 + i,
        )  # fmt: skip
    return params


def new_state(config, params, agents: Agents):
    role_optims = {r: config.rl_optim[r] for r in ROLES}
    copy = {r: jax.tree.map(lambda x: x.copy(), params[r]) for r in ROLES}
    return create_state(copy, agents.rest, role_optims, jax.random.key(config.seed))


def _protocol(agents, params, prompts, types, seed, feedback):
    conv = agents.agent_fn("conversation", params["conversation"])
    fb = agents.agent_fn("feedback", params["feedback"])
    return run_protocol(conv, fb, prompts, types, seed, feedback=feedback)


def stage_coefs(rc, stage: int) -> tuple[float, float, float]:
    """(alpha, lambda, gamma) of a stage: stage 2 drops the additive label term (lambda = 0)."""
    return (rc.alpha, rc.lam if stage == 1 else 0.0, rc.gamma)


def stage_steps(config, stage: int) -> int:
    return config.rl.stage1_steps if stage == 1 else config.rl.stage2_steps


def make_collect(config, agents, stage: int):
    """`collect(state, step) -> (batches {role: batch}, rollout metrics)` of one stage.

    The prompt draws and sampling seeds are a pure function of (seed, stage, step), so a stage
    resumed at any step continues exactly as an uninterrupted one.
    """
    c, rc = config, config.rl
    alpha, lam, gamma = stage_coefs(rc, stage)
    feedback = "none" if c.single else "agent"
    prompts, types = make_prompts(rc.num_train_prompts, c.seed, "train")
    rng = np.random.default_rng([c.seed, stage, 0x5A])
    n = stage_steps(c, stage)
    draws = [rng.choice(len(prompts), rc.batch_size, replace=False) for _ in range(n)]

    def collect(state, step):
        idx = draws[step]
        seed = (c.seed * 1000 + stage) * 100000 + step
        traj, rec = _protocol(agents, state.params, prompts[idx], types[idx], seed, feedback)
        rew = rewards(traj, alpha=alpha, lam=lam, gamma=gamma, gate=c.gate, judge_fn=agents.judge)
        batches, _ = assemble(rec, traj, rew, seed, conv_mix="a" if c.single else rc.conv_mix)
        if c.single:
            batches.pop("feedback")
        row = {f"rollout/{k}": v for k, v in metrics(traj, rew, agents.judge).items()}
        row["rollout/r_f"] = float(rew["r_f"].mean())
        return batches, row

    return collect


def make_stage_update(config, agents, stage: int):
    """`update(state, batches) -> (state, metrics)` for `fit`: the shared compiled per-agent
    update (`rl.waltz.waltz_update`) on the roles this stage trains."""
    train_conv = stage == 2 and not config.frozen_conversation

    def update(state, batches):
        state, m = waltz_update(state, agents.update, batches, train_conversation=train_conv)
        out = {f"train/{k}": v for k, v in m.items()}
        out["train/skipped"] = state.skipped  # cumulative, as `fit`'s skip guard reads it
        return state, out

    return update


class _StageLog:
    """The writer `fit` sees: keeps every step's row (the stage history) and passes the rows
    of the logged steps (every `log_every`, and the last) on to the run's writer."""

    def __init__(self, writer, log_every: int, last: int, prefix_step: int):
        self.writer, self.log_every, self.last, self.prefix = writer, log_every, last, prefix_step
        self.history = []
        if writer is not None and hasattr(writer, "offset"):
            self.offset, self.truncate = writer.offset, writer.truncate

    def write(self, step, row):
        row = {k: float(np.asarray(v)) for k, v in row.items()}
        self.history.append(row)
        done = step - self.prefix
        if self.writer is not None and (done % self.log_every == 0 or done == self.last):
            self.writer.write(step, row)
        return row

    def flush(self):
        if self.writer is not None:
            self.writer.flush()


def train_stage(
    config, agents, state, *, stage: int, writer=None, prefix_step=0, ckpt=None, resume=None
):
    """The RL steps of one stage through `train.loop.fit`; returns (state, per-step history).

    `ckpt`/`resume`: the stage's Checkpointer and the `extra` restored with `state` (a resumed
    stage continues from its checkpointed loop step).
    """
    steps = stage_steps(config, stage)
    log = _StageLog(writer, max(config.log_every, 1), steps, prefix_step)
    state, _ = fit(
        state,
        make_collect(config, agents, stage),
        config.rl.inner_updates,
        update_fn=make_stage_update(config, agents, stage),
        num_steps=steps,
        writer=log,
        ckpt=ckpt,
        resume=resume,
        ckpt_every=config.ckpt_every,
        log_every=1,  # every row goes to the history; `_StageLog` thins what is written
        extra={"stage": f"stage{stage}"},
        desc=f"waltz stage {stage}",
        prefix_step=prefix_step,
    )
    return state, log.history


def evaluate(config, agents, params, *, feedback="agent", guard=False):
    """Held-out metrics of the protocol's final answers (sampled at the RL temperature)."""
    c, b = config, config.rl.batch_size
    prompts, types = make_prompts(c.rl.num_eval, c.seed + 999, "test")
    parts = []
    for start in range(0, len(prompts), b):
        p, t = prompts[start : start + b], types[start : start + b]
        n = len(p)
        if n < b:  # pad the last chunk to the static batch, then drop the padding rows
            p, t = np.concatenate([p, p[: b - n]]), np.concatenate([t, t[: b - n]])
        traj, _ = _protocol(agents, params, p, t, 7919 + start, feedback)
        parts.append({k: v[:n] for k, v in traj.__dict__.items()})
    traj = Trajectories(**{k: np.concatenate([q[k] for q in parts]) for k in parts[0]})
    if guard:
        traj = safeguard(traj, [REFUSE, EOS, PAD][:ANSWER_NEW])
    return metrics(traj, judge_fn=agents.judge), traj


def run(config, workdir: str) -> dict:
    """The default pipeline (warm start -> baselines -> stage 1 -> stage 2) on the shared runtime.

    Each RL stage is one `fit` with its own checkpoints (`ckpt/stage1`, `ckpt/stage2`); the
    warm start is the reference tree kept in every checkpointed state, and the evaluations are
    a pure function of the parameters, so a resumed or finished run recomputes them exactly.

    Returns:
      `<system>/<metric>` for every evaluated system, as written to result.json.
    """
    t0 = time.time()
    rt = Runtime(config)
    writer = rt.writer(workdir, tensorboard=False, console=not config.tiny)
    agents = Agents(config)
    role_optims = {r: config.rl_optim[r] for r in ROLES}

    def init(params, rest):
        return create_state(params, rest, role_optims, jax.random.key(config.seed))

    def ckpt(stage):
        path = os.path.join(workdir, "ckpt", f"stage{stage}")
        return Checkpointer(path, keep=config.keep_checkpoints)

    stages = [1, 2] if config.stage == "both" else [int(config.stage)]
    stages = [s for s in stages if not (s == 1 and config.single)]
    ckpts = {s: ckpt(s) for s in stages}
    state = rt.create_state(init, agents.init_params, agents.rest)
    state, extra, resumed = rt.restore(ckpts[stages[0]], state)
    if resumed:  # the warm start is the reference tree kept in the state
        params = state.frozen["ref"]
    else:
        params = warm_start(config, agents)
        state = rt.create_state(init, params, agents.rest)
    result = {
        "untrained_pair": evaluate(config, agents, params)[0],
        "safeguard": evaluate(config, agents, params, guard=True)[0],
        "oracle_template": evaluate(config, agents, params, feedback="oracle")[0],
    }
    for stage in stages:
        if stage != stages[0]:
            state, extra, resumed = rt.restore(ckpts[stage], state)
        state, _ = train_stage(
            config, agents, state, stage=stage, writer=writer,
            prefix_step=config.rl.stage1_steps if stage == 2 else 0,
            ckpt=ckpts[stage], resume=extra if resumed else None,
        )  # fmt: skip
        ckpts[stage].close()
        fb = "none" if config.single else "agent"
        name = "stage1" if stage == 1 else "final"
        result[name] = evaluate(config, agents, state.params, feedback=fb)[0]
        if stage == 1:
            result["stage1_conversation_bitwise_unchanged"] = trees_equal(
                state.frozen["ref"]["conversation"], state.params["conversation"]
            )
    writer.close()
    flat = {}
    for name, m in result.items():
        flat.update({f"{name}/{k}": v for k, v in m.items()} if isinstance(m, dict) else {name: m})
    flat["update_traces"] = agents.update.traces
    flat["seconds"] = time.time() - t0
    keys = ["rollout/asr", "rollout/orr", "rollout/ftr_nonharmful", "rollout/label_acc"]
    keys += ["rollout/json_valid", "rollout/dir_pos"]
    return finish(
        workdir,
        flat,
        metrics_path=writer.jsonl_path,
        plot_keys=keys,
        title=f"WaltzRL on the synthetic safety world (stages {stages})",
        table=format_systems(result),
    )


COLUMNS = ("asr", "orr", "ftr", "ftr_nonharmful", "label_acc", "label_f1", "json_valid")
COLUMNS += ("dir_pos", "dir_zero", "dir_neg")


def format_systems(result: dict) -> str:
    """One line per evaluated system of a run."""
    out = [f"{'system':18s} " + " ".join(f"{k[:9]:>9s}" for k in COLUMNS)]
    for name, m in result.items():
        if isinstance(m, dict):
            out.append(f"{name:18s} " + " ".join(f"{m.get(k, float('nan')):9.3f}" for k in COLUMNS))
    return "\n".join(out)
