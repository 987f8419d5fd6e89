"""GRPO, RLOO and Dr.GRPO on a small causal LM warm-started by SFT on arithmetic derivations.

Default (`--config=configs/grpo.py`): a 4-layer d=128 causal LM (~0.8M parameters) is SFT-trained
for 400 steps on 2-operation arithmetic derivations ending in "the final answer is N" (cached in
`workdir/sft`, reused on rerun), then 180 GRPO steps of 32 prompts x 8 samples (exact-match reward,
k3 KL 0.05 to the SFT policy, groups with equal rewards dropped as in DAPO, AdamW lr 1e-4
constant after 5 warm-up steps). The warm start is in the mixed-difficulty band: greedy 63.3%,
sampled pass@1 50.6% on 512 held-out prompts. It prints greedy accuracy, sampled pass@1 (4
samples) and the 4-sample answer bound on 512 held-out prompts before and after RL, each change
with a paired-bootstrap 95% interval.
Measured over 3 seeds (bench/results/grpo_seeds.md, each seed its own SFT warm start): sampled
pass@1 +6.1 [+3.6, +8.4], +6.5 [+4.4, +8.7], +5.7 [+3.5, +7.9] points, mean **+6.1 [+5.0, +7.2]**
(t-interval over seeds); greedy accuracy does not move reliably (-0.6, +2.7, +1.4, each interval
spans zero); answer bound -0.3 to -0.4 nats. The pass@1 gain grows with steps (seed 0: +1.9 at
60, +4.2 at 120, +6.1 at 180): RL sharpens the sampling distribution toward what greedy decoding
already gets right; it does not teach the model arithmetic that greedy decoding gets wrong. Over
the 180-step shuffled-reward control (seed 0, same prompts and keys, bench/results/grpo_sweep.md):
pass@1 +20.1 [+16.9, +23.3], greedy +17.2 [+13.1, +21.5] points (the control drifts down 14.0 /
17.8).
Time: RL 180 steps + 2 evaluations took 60 min on a 2-core CPU shared with ~20
runnable jobs (load 15-28); on an idle 2-core CPU ~6 s per step (~20 min); SFT ~5 min idle,
~27 min loaded. Shorter runs: `--config.rl.steps=60` (~7 min idle; pass@1 +1.9 [-0.3, +4.1]).

Variants (after the colon, comma-separated):
  objective=grpo|rloo        grpo: clipped ratio + group mean/std advantage; rloo: leave-one-out
  advantage=group_mean_std|group_mean|rloo|batch_norm   override the estimator (group_mean +
                             loss_norm=constant is Dr.GRPO)
  loss_norm=token|sequence|constant
  kl=0.05                    KL coefficient to the frozen SFT policy (k3 estimator)
  --config.rl.control=lr0|shuffle   the same loop with exact-zero updates or rewards permuted
                             within each group (rl/evaluation.py); compare runs by paired bootstrap
  tiny                       2 steps of every stage on a tiny model (tests)
"""

import ml_collections as mlc

from configs import common

ADVANTAGE_FOR = {"grpo": "group_mean_std", "rloo": "rloo"}


def ar_rl_config(experiment: str, v: dict) -> mlc.ConfigDict:
    """The SFT warm start and RL-loop fields shared by configs/grpo.py and configs/jepo.py.

    Both configs use the same SFT settings, so one cached SFT directory (`rl.sft_dir`) serves both
    (bench/jepo_vs_rl.py relies on this).
    """
    c = common.base_config(experiment, v)
    c.task = "arithmetic"
    c.task_kwargs = {"num_ops": 2}
    c.model = common.model_config(causal=True)
    c.optim = common.optim_config(lr=2e-3, warmup_steps=20)
    c.sft = dict(
        steps=400,
        batch_size=64,
        num_train=4000,
        num_test=256,
        max_len=64,
        style="compact",
        microbatches=1,
    )
    # Measured (bench/results/grpo_sweep.md, 512 held-out prompts, seed 0): at 32 x 8 rows with a
    # k3 KL 0.05 to the SFT policy, lr 1e-4 raises sampled pass@1 by +1.9 / +4.2 / +6.1 points at
    # 60 / 120 / 180 steps (intervals exclude zero from 120 on) with greedy unchanged; lr 3e-4 x 60
    # steps loses 10 greedy points, lr 1e-3 x 48 loses 15 (drift beats the signal).
    c.rl_optim = common.optim_config(
        lr=1e-4, warmup_steps=5, schedule="constant", weight_decay=0.0, clip_norm=1.0
    )
    c.rl = mlc.ConfigDict(
        dict(
            objective="grpo",
            sft_dir="",  # "" = workdir/sft
            seed=-1,  # RL sampling/prompt-order seed; -1 = config.seed
            steps=180,  # see the measured pass@1 curve above; JEPO keeps its measured 24
            prompts_per_step=32,
            group_size=8,
            inner_updates=1,
            microbatches=1,
            num_train_prompts=2000,
            num_eval=512,  # held-out prompts (paired bootstrap over prompts)
            eval_batch_size=128,  # held-out prompts per sampler call
            eval_samples=4,  # samples per prompt: sampled pass@1 and the n-sample answer bound
            control="none",  # "none" | "lr0" (exact-zero updates) | "shuffle" (within groups)
            drop_zero_var=True,  # DAPO: groups with equal rewards get zero loss weight
            max_prompt_len=16,
            max_new_tokens=48,
            max_answer_tokens=8,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            reward="exact",  # "exact": task verifier; "none": no verifier (JEPO only)
            advantage="group_mean_std",
            # objective fields (each objective picks the ones it knows)
            clip_eps=0.2,
            clip_eps_high=0.2,
            kl_coef=0.05,  # to the frozen SFT policy
            kl_estimator="k3",
            loss_norm="token",
            multi_sample=True,
            beta_sup=0.0,
            format_penalty=10.0,
            combine_rl=False,
        )
    )
    c.log_every = 10
    c.eval_every = 0
    c.ckpt_every = 20
    if c.tiny:
        common.tiny_model(c.model)
        c.sft.update(steps=2, batch_size=4, num_train=16, num_test=8)
        c.rl.update(
            steps=2,
            prompts_per_step=2,
            group_size=2,
            num_train_prompts=8,
            num_eval=4,
            eval_batch_size=4,
            eval_samples=2,
            max_new_tokens=12,
        )
        c.log_every = 1
        c.ckpt_every = 1
    return c


def get_config(arg=None):
    v = common.parse_variant(
        arg,
        {"objective": "grpo", "advantage": "", "loss_norm": "token", "kl": 0.05, "tiny": False},
        {
            "objective": ("grpo", "rloo"),
            "advantage": ("", "group_mean_std", "group_mean", "rloo", "batch_norm"),
            "loss_norm": ("token", "sequence", "constant"),
        },
    )
    c = ar_rl_config("grpo", v)
    c.rl.objective = v["objective"]
    c.rl.advantage = v["advantage"] or ADVANTAGE_FOR[v["objective"]]
    c.rl.loss_norm = v["loss_norm"]
    c.rl.kl_coef = v["kl"]
    # A step whose every advantage is exactly 0 (all groups flat) makes no update: params and
    # Adam state unchanged (its gradient would be only the KL term), `rl/skipped_updates` 1.
    # GRPO/RLOO only: JEPO's advantages are not rewards; LlamaRL's loop does not read it.
    c.rl.skip_flat_batches = True
    return c
