"""The WaltzRL collaboration protocol on the host, and training-sample assembly (arXiv:2510.08240).

With T_max = 1 (spec §1):

    c0 ~ pi_c(. | p);  f0 ~ pi_f(. | p, c0)
    if f0 is not schema-valid JSON or flags nothing: output c0
    else: c1 ~ pi_c(. | p, c0, feedback text of f0); output c1

Branching stays on the host; every device call has a static shape: contexts are left-padded to
one bucket (`CTX_LEN`) and the batch size is fixed, so each sampler compiles once. The c1 call
runs on the whole batch and rows without a revision are discarded (their c1 is padding). The
token ids that later turns and the training rows use are the exact sampled ids (no
re-tokenising): the revision context holds c0's ids and the ids of f0's `feedback` field.

Training samples (spec §3): per trajectory the conversation agent gets type A (p -> c0, reward
R_c(c0)) or, when there is a revision and a coin says so, type B ((p, c0, f0) -> c1, reward
R_c(c1)); the feedback agent gets one round chosen at random (only round 0 exists at T_max = 1).
Advantages are REINFORCE++'s: normalised over the global batch, per agent.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rl.advantages import batch_norm
from rl.waltz_rewards import Trajectories, flagged
from rl.waltz_world import (
    ANSWER_NEW,
    CTX_LEN,
    FEEDBACK_NEW,
    GEN_LEN,
    PAD,
    R_BAD,
    R_FINE,
    feedback_context,
    feedback_text_ids,
    feedback_tokens,
    hint_for,
    judge,
    left_pad,
    parse_feedback,
    revision_context,
)

# (ctx_ids [B, CTX_LEN], ctx_mask [B, CTX_LEN], seed) -> (tokens [B, N], logp [B, N]) numpy.
AgentFn = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def run_protocol(
    conv_fn: AgentFn,
    fb_fn: AgentFn | None,
    prompts: np.ndarray,
    types: np.ndarray,
    seed: int,
    *,
    feedback: str = "agent",
) -> tuple[Trajectories, dict]:
    """One protocol round for a batch of prompts.

    Args:
      conv_fn / fb_fn: the two agents' samplers (`AgentFn`).
      prompts: [B, PROMPT_LEN] ids; types: hidden prompt types [B] (used by the oracle only).
      seed: sampling seed of this call (each turn folds in its own offset).
      feedback: "agent" (pi_f), "oracle" (judge labels -> template feedback, a baseline) or
        "none" (single-agent: c0 is the output).

    Returns:
      (Trajectories, record) where record holds the contexts and behaviour log-probs that
      `assemble` turns into training rows.
    """
    b = len(prompts)
    ctx0, m0 = left_pad([list(p) for p in prompts])
    c0, lp_c0 = conv_fn(ctx0, m0, seed * 3)
    fctx, fm = left_pad([feedback_context(p, c) for p, c in zip(prompts, c0)])
    lp_f0 = np.zeros((b, FEEDBACK_NEW), np.float32)
    if feedback == "agent":
        f0, lp_f0 = fb_fn(fctx, fm, seed * 3 + 1)
    elif feedback == "oracle":
        u0, o0 = judge(types, c0)
        f0 = np.full((b, FEEDBACK_NEW), PAD, np.int32)
        for i, (u, o) in enumerate(zip(u0, o0)):
            r = feedback_tokens(R_BAD if (u or o) else R_FINE, u, o, hint_for(u, o))
            f0[i, : len(r)] = r
    elif feedback == "none":
        f0 = np.full((b, FEEDBACK_NEW), PAD, np.int32)
    else:
        raise ValueError(f"unknown feedback mode {feedback!r}; expected agent, oracle or none")
    parsed = [parse_feedback(f) if feedback != "none" else None for f in f0]
    valid = np.array([p is not None for p in parsed])
    pu = np.array([bool(p and p["unsafe"]) for p in parsed])
    po = np.array([bool(p and p["overrefuse"]) for p in parsed])
    revised = flagged(valid, pu, po)
    c1 = np.full((b, ANSWER_NEW), PAD, np.int32)
    lp_c1 = np.zeros((b, ANSWER_NEW), np.float32)
    rctx_rows = [
        revision_context(p, c, feedback_text_ids(f)) if r else list(p)
        for p, c, f, r in zip(prompts, c0, f0, revised)
    ]
    rctx, rm = left_pad(rctx_rows)
    if revised.any():
        s1, l1 = conv_fn(rctx, rm, seed * 3 + 2)
        c1 = np.where(revised[:, None], s1, PAD).astype(np.int32)
        lp_c1 = np.where(revised[:, None], l1, 0.0).astype(np.float32)
    traj = Trajectories(types, c0, f0, c1, valid, pu, po, revised)
    record = {
        "ctx0": ctx0, "c0": c0, "lp_c0": lp_c0,
        "fctx": fctx, "f0": f0, "lp_f0": lp_f0,
        "rctx": rctx, "c1": c1, "lp_c1": lp_c1,
    }  # fmt: skip
    return traj, record


def training_row(ctx: np.ndarray, gen: np.ndarray, logp: np.ndarray, pad: int = PAD) -> dict:
    """[context CTX_LEN | generation GEN_LEN] rows with masks and aligned behaviour log-probs.

    The generation's real tokens are the sampled ids up to and including EOS (the sampler pads
    after EOS), so `mask` and `score_mask` follow `gen != pad`.
    """
    b, n = gen.shape
    if ctx.shape[1] != CTX_LEN or n > GEN_LEN:
        raise ValueError(f"rows need [B, {CTX_LEN}] contexts and at most {GEN_LEN} new tokens")
    g = np.full((b, GEN_LEN), pad, np.int32)
    g[:, :n] = gen
    lp = np.zeros((b, CTX_LEN + GEN_LEN), np.float32)
    lp[:, CTX_LEN : CTX_LEN + n] = logp
    tokens = np.concatenate([ctx, g], axis=1).astype(np.int32)
    gen_mask = np.concatenate([np.zeros_like(ctx, bool), g != pad], axis=1)
    lp = np.where(gen_mask, lp, 0.0).astype(np.float32)
    return {"tokens": tokens, "mask": (tokens != pad), "score_mask": gen_mask, "old_logp": lp}


def assemble(record: dict, traj: Trajectories, rew: dict, seed: int, *, conv_mix: str = "ab"):
    """Training batches {role: rows} from one protocol batch.

    Args:
      record, traj: from `run_protocol`.
      rew: from `waltz_rewards.rewards`.
      seed: seed of the random type-A/B and round choices (a pure function of it).
      conv_mix: "ab" mixes type A and B samples (coin per revised trajectory), "a" keeps only
        first answers (single-model baseline), "b" prefers revisions wherever there is one.

    Returns:
      ({"conversation": rows, "feedback": rows}, info) with info["type_b"] the chosen types.
    """
    rng = np.random.default_rng([seed, 0xA55E])
    b = len(traj.types)
    coin = rng.random(b) < 0.5 if conv_mix == "ab" else np.full(b, conv_mix == "b")
    type_b = traj.revised & coin
    ctx = np.where(type_b[:, None], record["rctx"], record["ctx0"])
    gen = np.where(type_b[:, None], record["c1"], record["c0"])
    lp = np.where(type_b[:, None], record["lp_c1"], record["lp_c0"])
    r_c = np.where(type_b, rew["r_c1"], rew["r_c0"])
    conv = training_row(ctx, gen, lp)
    conv["adv"] = np.asarray(batch_norm(r_c), np.float32)
    # One feedback round per trajectory, uniformly among its rounds (one round at T_max = 1).
    rounds = np.ones(b, np.int32)
    _ = (rng.random(b) * rounds).astype(np.int32)
    fb = training_row(record["fctx"], record["f0"], record["lp_f0"])
    fb["adv"] = np.asarray(batch_norm(rew["r_f"]), np.float32)
    return {"conversation": conv, "feedback": fb}, {"type_b": type_b, "r_c": r_c}
