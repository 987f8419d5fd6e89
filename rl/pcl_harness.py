"""The five prompt curricula of the PCL comparison (arXiv:2510.01135 §2) behind one `collect`.

Every curriculum returns a GRPO batch of exactly m prompts × n samples (static shapes), so all of
them train on the same number of samples per step; they differ in how the m prompts are found and
in what that costs:

- `uniform`: m prompts drawn uniformly (plain GRPO).
- `prefilter`: once, before RL, every pool prompt gets `prefilter_samples` rollouts from the
  initial policy; prompts with an all-0 or all-1 screen are dropped for the whole run (static, goes
  stale); then uniform over the rest. Its one-time cost is charged to the run's wall-clock.
- `ds`: DAPO dynamic sampling: roll out m fresh prompts, keep the mixed groups, refill with
  further rounds of m until m are kept or `ds_max_rounds` is hit; a short batch is completed with
  rejected groups (their advantages are zero) and counted as a refill failure.
- `speed`: SPEED-style screening: k·m candidates get `speed_samples` cheap rollouts each; the m
  whose screening pass rate is closest to τ (random tie-break) get the full n rollouts.
- `pcl`: the value model scores k·m candidates in one jitted forward pass and the m closest to τ
  are rolled out (`rl.curriculum`); the batch also carries the value model's MSE targets.

Costs are measured per step on the host (`cost/*`): generated samples, selection seconds (the
value forward, the screening rollouts, DS's rollouts of rejected groups), all collection seconds,
and the number of accepted intermediate (mixed) groups that end up in the training batch.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from rl import advantages as adv_lib
from rl import curriculum
from rl.sampling.autoregressive import make_sampler

CURRICULA = ("pcl", "uniform", "prefilter", "ds", "speed")


class Harness:
    """Prompt pools, samplers, rewards and the curricula (host side)."""

    def __init__(self, config, graphdef, task, tokenizer):
        from data.pipeline import encode_prompts

        self.c, self.rc, self.task, self.tok = config, config.rl, task, tokenizer
        rc = self.rc
        if rc.curriculum not in CURRICULA:
            raise ValueError(f"unknown curriculum {rc.curriculum!r}; expected one of {CURRICULA}")
        self.seed = config.seed if rc.seed < 0 else rc.seed
        self.train = task.generate("train", rc.num_train_prompts, config.seed + 1)
        self.test = task.generate("test", rc.num_eval, config.seed)
        style = config.sft.style
        self.train_p = encode_prompts(self.train, task, tokenizer, rc.max_prompt_len, style)
        self.test_p = encode_prompts(self.test, task, tokenizer, rc.max_prompt_len, style)
        self.train_diff = np.array([ex.get("difficulty", 0) for ex in self.train], np.float32)
        self.test_diff = np.array([ex.get("difficulty", 0) for ex in self.test], np.int32)
        kw = dict(
            max_new_tokens=rc.max_new_tokens, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id
        )
        self.sample = make_sampler(graphdef, temperature=rc.temperature, **kw)
        self.greedy = make_sampler(graphdef, greedy=True, **kw)
        self.select = curriculum.make_select_fn(graphdef, rc.prompts_per_step, rc.tau)
        self.pool = np.arange(len(self.train))  # prefilter narrows it
        self.setup_s = 0.0

    # ------------------------------------------------------------------ rollouts

    def rollout(self, state, idx, key, n: int):
        """n samples per prompt in `idx`: (rows dict, each [len(idx)*n, ...]; rewards [B, n])."""
        pt = np.repeat(self.train_p["tokens"][idx], n, 0)
        pm = np.repeat(self.train_p["mask"][idx], n, 0)
        out = self.sample(state.params["policy"], state.frozen["policy"], pt, pm, key)
        out = jax.device_get(out)
        r = np.array(
            [
                self.task.reward(self.tok.decode(t[m]), self.train[i])
                for t, m, i in zip(out.tokens, out.mask, np.repeat(idx, n), strict=True)
            ],
            np.float32,
        ).reshape(len(idx), n)
        rows = {"pt": pt, "pm": pm, "gt": out.tokens, "gm": out.mask, "lp": out.logp}
        return rows, r

    def _key(self, step: int, tag: int):
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed + 17), step), tag)

    def prefilter(self, state):
        """Screens the whole pool once with the initial policy (curriculum=prefilter)."""
        t0 = time.perf_counter()
        rc, n = self.rc, self.rc.prefilter_samples
        chunk = max(1, (rc.prompts_per_step * rc.group_size) // n)
        rates, secs = [], []
        for s in range(0, len(self.train), chunk):
            t1 = time.perf_counter()
            idx = np.arange(s, min(s + chunk, len(self.train)))
            idx = np.pad(idx, (0, chunk - len(idx)), mode="edge")  # one compiled shape
            _, r = self.rollout(state, idx, self._key(0, 1_000_000 + s), n)
            rates.append(r.mean(1))
            secs.append(time.perf_counter() - t1)
        rate = np.concatenate(rates)[: len(self.train)]
        keep = np.flatnonzero((rate > 0) & (rate < 1))
        self.pool = keep if len(keep) >= rc.prompts_per_step else self.pool
        # Compilation is not a cost of the method: the first chunk is charged at the median.
        self.setup_s = float(np.median(secs) * len(secs)) if len(secs) > 1 else secs[0]
        return {
            "prefilter/kept_frac": len(keep) / len(self.train),
            "prefilter/s": self.setup_s,
            "prefilter/s_with_compile": time.perf_counter() - t0,
        }

    # ------------------------------------------------------------------ curricula

    def _draw(self, step: int, num: int, tag: int = 0) -> np.ndarray:
        pick = curriculum.sample_candidates(len(self.pool), num, self.seed + 1000 * tag, step)
        return self.pool[pick]

    def collect(self, state, step: int):
        """The training batch for `step` (fixed shapes) and host statistics."""
        rc, m, n = self.rc, self.rc.prompts_per_step, self.rc.group_size
        t0 = time.perf_counter()
        select_s, gen, extra = 0.0, 0, {}
        cur = rc.curriculum
        if cur == "pcl":
            cand = self._draw(step, rc.k * m)
            idx, v = self.select(
                state.params["value"],
                state.frozen["policy"],
                self.train_p["tokens"][cand],
                self.train_p["mask"][cand],
            )
            idx, v = np.asarray(idx), np.asarray(v)
            sel, v_sel = cand[idx], v[idx]
            select_s = time.perf_counter() - t0
            rows, r = self.rollout(state, sel, self._key(step, 0), n)
            gen = m * n
        elif cur == "speed":
            cand = self._draw(step, rc.k * m)
            _, r0 = self.rollout(state, cand, self._key(step, 1), rc.speed_samples)
            jitter = np.random.default_rng([self.seed, step, 3]).random(len(cand)) * 1e-3
            sel = cand[np.argsort(np.abs(r0.mean(1) - rc.tau) + jitter)[:m]]
            select_s = time.perf_counter() - t0
            rows, r = self.rollout(state, sel, self._key(step, 0), n)
            gen = len(cand) * rc.speed_samples + m * n
        elif cur == "ds":
            rows, r, sel, gen, select_s, extra = self._dynamic_sampling(state, step)
        else:  # uniform, prefilter
            sel = self._draw(step, m)
            rows, r = self.rollout(state, sel, self._key(step, 0), n)
            gen = m * n
        a = np.asarray(adv_lib.compute(rc.advantage, r)).reshape(-1)
        z = np.zeros_like(rows["pt"], np.float32)
        batch = {
            "tokens": np.concatenate([rows["pt"], rows["gt"]], 1),
            "mask": np.concatenate([rows["pm"], rows["gm"]], 1),
            "score_mask": np.concatenate([np.zeros_like(rows["pm"]), rows["gm"]], 1),
            "old_logp": np.concatenate([z, rows["lp"]], 1),
            "adv": a,
        }
        y = curriculum.group_pass_rate(r)
        mixed = curriculum.mixed_groups(r)
        stats = {
            "rl/reward_mean": float(r.mean()),
            "rl/effective_ratio": curriculum.effective_ratio(a),
            "rl/mixed_frac": float(mixed.mean()),
            "sel/pass_rate_mean": float(y.mean()),
            "sel/difficulty_mean": float(self.train_diff[sel].mean()),
            "cost/gen_samples": float(gen),
            "cost/accepted": float(mixed.sum()),
            "cost/select_s": select_s,
            "cost/collect_s": time.perf_counter() - t0,
            **extra,
        }
        if cur == "pcl":
            batch["v_tokens"] = self.train_p["tokens"][sel]
            batch["v_mask"] = self.train_p["mask"][sel]
            batch["v_target"] = y
            # The value model's error on these prompts before it sees their targets.
            stats["pcl/value_mse"] = float(np.mean((v_sel - y) ** 2))
            stats["pcl/v_sel_mean"] = float(v_sel.mean())
        record = {"pass_rate": y.tolist(), "difficulty": self.train_diff[sel].tolist()}
        return batch, stats, record

    def _dynamic_sampling(self, state, step: int):
        rc, m, n = self.rc, self.rc.prompts_per_step, self.rc.group_size
        kept, spare, gen, reject_s = [], [], 0, 0.0
        rounds = 0
        while len(kept) < m and rounds < rc.ds_max_rounds:
            t0 = time.perf_counter()
            idx = self._draw(step, m, tag=rounds + 1)
            rows, r = self.rollout(state, idx, self._key(step, 10 + rounds), n)
            dt = time.perf_counter() - t0
            gen += m * n
            mixed = curriculum.mixed_groups(r)
            reject_s += dt * float((~mixed).mean())
            for g in range(m):
                grp = ({k: v[g * n : (g + 1) * n] for k, v in rows.items()}, r[g], idx[g])
                (kept if mixed[g] else spare).append(grp)
            rounds += 1
        short = max(0, m - len(kept))
        groups = (kept + spare[:short])[:m]
        rows = {k: np.concatenate([g[0][k] for g in groups]) for k in groups[0][0]}
        r = np.stack([g[1] for g in groups])
        sel = np.array([g[2] for g in groups])
        extra = {
            "ds/rounds": float(rounds),
            "ds/short": float(short),
            "ds/failed": float(short > 0),
        }
        return rows, r, sel, gen, reject_s, extra

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, state) -> np.ndarray:
        """Greedy per-prompt correctness on the held-out set [num_eval]."""
        rc, correct = self.rc, []
        for s in range(0, len(self.test), rc.eval_batch_size):
            idx = np.arange(s, s + rc.eval_batch_size) % len(self.test)
            out = self.greedy(
                state.params["policy"],
                state.frozen["policy"],
                self.test_p["tokens"][idx],
                self.test_p["mask"][idx],
                jax.random.key(0),
            )
            out = jax.device_get(out)
            for t, mk, i in zip(out.tokens, out.mask, idx, strict=True):
                correct.append(self.task.metrics(self.tok.decode(t[mk]), self.test[i])["correct"])
        return np.asarray(correct[: len(self.test)], np.float32)
