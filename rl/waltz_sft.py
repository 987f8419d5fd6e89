"""Short SFT warm starts of both WaltzRL agents on a noisy oracle of the synthetic world.

The warm starts are deliberately imperfect, like an instruction-tuned model before safety RL
(spec §4: 39% unsafe on WildJailbreak, 45% over-refusal on OR-Bench):

- conversation agent, first answers: complies with a harmful prompt 20% of the time (70% under a
  roleplay jailbreak wrapper), refuses a benign-sensitive prompt 50% of the time and a benign one
  10%; revisions follow the hint ("refuse" / "comply safely") 75% of the time and otherwise
  repeat the first answer's mode.
- feedback agent: the canonical JSON with the judge's labels, but 30% of the labels are replaced
  by a random label pair, 15% of hints are random and 25% of strings are corrupted (a dropped
  piece, a truncation or a word where a boolean belongs), so about a quarter is invalid JSON.

Rows use the RL layout `[context CTX_LEN | generation GEN_LEN]` with the loss on the generation.
"""

from __future__ import annotations

import jax
import numpy as np

from rl.waltz_world import (
    ASK,
    BENIGN,
    COMPLY,
    CTX_LEN,
    EOS,
    GEN_LEN,
    H_COMPLY,
    H_NONE,
    H_REFUSE,
    HARMFUL,
    PAD,
    R_BAD,
    R_BEN,
    R_FINE,
    R_HARM,
    REFUSE,
    ROLEPLAY,
    SENSITIVE,
    feedback_context,
    feedback_tokens,
    hint_for,
    judge,
    left_pad,
    make_prompts,
    revision_context,
)
from train.lm import make_ar_loss
from train.optim import make_optimizer
from train.state import TrainState
from train.step import make_update_step

P_COMPLY = {(HARMFUL, False): 0.2, (HARMFUL, True): 0.7, (SENSITIVE, False): 0.5}
P_COMPLY.update({(SENSITIVE, True): 0.5, (BENIGN, False): 0.9, (BENIGN, True): 0.9})
P_FOLLOW_HINT, P_LABEL_NOISE, P_HINT_NOISE, P_CORRUPT = 0.75, 0.3, 0.15, 0.25
HINTS = (H_REFUSE, H_COMPLY, H_NONE)


def first_answers(prompts, types, rng) -> np.ndarray:
    """Warm-start behaviour: answers [B, 2] = [mode, EOS]."""
    roleplay = prompts[:, 1] == ROLEPLAY
    p = np.array([P_COMPLY[(int(t), bool(r))] for t, r in zip(types, roleplay)])
    mode = np.where(rng.random(len(types)) < p, COMPLY, REFUSE)
    return np.stack([mode, np.full_like(mode, EOS)], 1).astype(np.int32)


def _rows(ctxs, gens) -> dict[str, np.ndarray]:
    ctx, _ = left_pad(ctxs, CTX_LEN)
    g = np.full((len(gens), GEN_LEN), PAD, np.int32)
    for i, r in enumerate(gens):
        g[i, : len(r)] = r
    tokens = np.concatenate([ctx, g], 1)
    loss_mask = np.concatenate([np.zeros_like(ctx, bool), g != PAD], 1)
    return {"tokens": tokens, "mask": tokens != PAD, "loss_mask": loss_mask}


def conversation_data(num: int, seed: int) -> dict[str, np.ndarray]:
    """Half first answers (p -> c0), half revisions ((p, c0, hint) -> c1)."""
    rng = np.random.default_rng([seed, 11])
    prompts, types = make_prompts(num, seed, "train")
    c0 = first_answers(prompts, types, rng)
    hints = rng.choice(HINTS, num)
    target = np.where(hints == H_REFUSE, REFUSE, np.where(hints == H_COMPLY, COMPLY, c0[:, 0]))
    mode = np.where(rng.random(num) < P_FOLLOW_HINT, target, c0[:, 0])
    revision = rng.random(num) < 0.5
    ctxs, gens = [], []
    for i in range(num):
        if revision[i]:
            ctxs.append(revision_context(prompts[i], c0[i], [int(hints[i])]))
            gens.append([int(mode[i]), EOS])
        else:
            ctxs.append(list(prompts[i]))
            gens.append([int(c0[i, 0]), EOS])
    return _rows(ctxs, gens)


def _corrupt(f: list[int], rng) -> list[int]:
    kind = rng.integers(3)
    if kind == 0:
        j = int(rng.integers(len(f) - 1))
        return f[:j] + f[j + 1 :]
    if kind == 1:
        return f[: int(rng.integers(1, len(f) - 1))] + [EOS]
    f = list(f)
    f[3] = int(rng.choice([R_FINE, H_NONE, ASK]))
    return f


def feedback_data(num: int, seed: int) -> dict[str, np.ndarray]:
    """Noisy canonical feedback on warm-start first answers (see the module docstring)."""
    rng = np.random.default_rng([seed, 12])
    prompts, types = make_prompts(num, seed + 1, "train")
    c0 = first_answers(prompts, types, rng)
    u0, o0 = judge(types, c0)
    pairs = ((False, False), (True, False), (False, True))
    ctxs, gens = [], []
    for i in range(num):
        u, o = bool(u0[i]), bool(o0[i])
        if rng.random() < P_LABEL_NOISE:
            u, o = pairs[rng.integers(3)]
        hint = hint_for(u, o) if rng.random() >= P_HINT_NOISE else int(rng.choice(HINTS))
        truth = R_HARM if types[i] == HARMFUL else R_BEN
        reason = truth if rng.random() < 0.8 else int(rng.choice([R_HARM, R_BEN, R_FINE, R_BAD]))
        f = feedback_tokens(reason, u, o, hint)
        if rng.random() < P_CORRUPT:
            f = _corrupt(f, rng)
        ctxs.append(feedback_context(prompts[i], c0[i]))
        gens.append(f)
    return _rows(ctxs, gens)


def make_sft_update(graphdef, optim):
    """The jitted next-token update shared by both agents' SFT (same shapes: one compile)."""
    tx = make_optimizer(optim)
    return tx, make_update_step(make_ar_loss(graphdef, "policy"), tx, donate=True)


def sft_agent(params, rest, data, *, sft_update, steps: int, batch_size: int, seed: int):
    """Trains one agent's params on `data` rows with next-token loss; returns (params, metrics).

    Args:
      sft_update: `(tx, update)` from `make_sft_update`.
    """
    if steps <= 0:
        return params, {}
    tx, update = sft_update
    state = TrainState.create({"policy": params}, tx, jax.random.key(seed), {"policy": rest})
    n = len(data["tokens"])
    rng = np.random.default_rng([seed, 13])
    m = {}
    for _ in range(steps):
        idx = rng.integers(0, n, batch_size)
        state, m = update(state, {k: v[idx] for k, v in data.items()})
    return state.params["policy"], {k: float(v) for k, v in m.items()}
