"""LlamaRL: asynchronous off-policy RL with AIPO, executors on their own sub-meshes, weight sync.

LlamaRL (arXiv:2505.24034), spec `../shared/papers/llamarl.md`. A generated verifiable task
(one-operation integer arithmetic, exact-match reward) and an SFT-warmed small policy (2-layer
d=64 causal LM, 300 SFT steps, cached in `workdir/sft`), then 150 RL steps with the AIPO loss
(truncated importance weight, ρ = 2) driven by the LlamaRL controller: a generator executor on
its own sub-mesh samples rollouts on a host thread and hands them through a bounded queue; the
trainer executor applies the update on its sub-mesh and syncs the weights back to the generator
device-to-device (bucketed, version-stamped, checksummed). The runner scores the warm start and
the final policy on 512 held-out prompts (rl/ar_eval.py).

The default's settings were chosen by held-out measurement (bench/results/llamarl_heldout.md):
16 prompts x 8 samples per step from 4000 training prompts (each seen once), AdamW lr 1e-4, a k3
KL of 0.05 to the SFT policy, 150 steps. Measured on the way (seed 0, 512 held-out prompts,
change of greedy / sampled pass@1 in points from the warm start's 70.5 / 44.8): the former
default (16 fixed prompts, lr 1e-3, no KL, 20 steps; now `:fixed_prompts`) raised the training
reward by +0.24..+0.31 over the lr0 control but lost 44-50 greedy points held out (memorising
16 prompts); with 2000 fresh prompts and KL 0.05, 20 steps at lr 1e-4 / 3e-4 / 1e-3 gave
-1.8 / -10.9 / -34.2 greedy and no pass@1 gain; 40 steps at 3e-4: -1.0 / +1.9 [-0.05, +3.8];
150 steps at 1e-4: -0.2 / +8.2 [+6.3, +10.1] (sync) and +0.6 / +7.4 [+5.6, +9.2] (k = 1).

Variants (after the colon, comma-separated):
  mode=sync      k = 0: the synchronous on-policy loop, trainer and generator co-located
  mode=async     k = 1: LlamaRL's one-step asynchrony (default), roles on disjoint devices
  mode=async_k   k = `k` (default 2): bounded asynchrony
  k=2            the staleness bound for mode=async_k
  variant=detached|ratio   AIPO variant (rl/objectives/aipo.py)
  objective=aipo|grpo      grpo: PPO-clip through the same path (μ as the old policy)
  fixed_prompts  the former default: 20 steps on 16 fixed prompts, lr 1e-3, no KL. The training
                 reward rises within 20 steps in every mode (spec §10.2's integration check,
                 tests/rl/distributed/test_learning.py, bench/results/llamarl_learning.md), but
                 held-out accuracy falls: evidence the loop learns, not a recipe
  tiny           2 SFT steps and 3 RL steps of a tiny model (tests; seconds on one core)

Devices: the split layouts need at least two devices; on CPU run with `JAX_NUM_CPU_DEVICES=8`
(trainer on devices 0-3 as fsdp, generator on 4-7 as tensor parallel). With a single device the
`auto` layout co-locates both roles (same code path; the result's `layout` says which ran).
On the shared 2-core CPU (load ~10) the default's SFT stage took ~2 min, 20 RL steps ~1 min
and 150 steps with the held-out evaluations ~5 min per mode on 8 fake devices. Two processes
(process 0 trainer, process 1 generator): `rl/distributed/multiprocess.py`. CPU wall-clock is
functional evidence only: it is not a measurement of LlamaRL's GPU speed-up (bench/llamarl.py).
"""

import ml_collections as mlc

from configs import common
from configs.grpo import ar_rl_config

MODES = {"sync": 0, "async": 1, "async_k": None}


def get_config(arg=None):
    v = common.parse_variant(
        arg,
        {
            "mode": "async",
            "k": 2,
            "variant": "detached",
            "objective": "aipo",
            "tiny": False,
            "fixed_prompts": False,
        },
        {
            "mode": tuple(MODES),
            "variant": ("detached", "ratio"),
            "objective": ("aipo", "grpo"),
        },
    )
    c = ar_rl_config("llamarl", v)
    if not c.tiny:
        # One-operation arithmetic and a 2-layer d=64 policy SFT-warmed for 300 steps (sampled
        # reward ~0.45-0.56: inside the 30-70% band), 16 prompts x 8 samples per step. Fixed
        # prompts, measured on training reward (one seed, sync unless said): 200 SFT steps start
        # at ~0.12, 500 at ~0.85; with 256 prompts the reward fell (lr 1e-3) or stayed flat
        # (lr 3e-4); with 32 prompts sync rose 0.58 -> 0.72 but k=2 gained only +0.05 over the lr0
        # control; lr 2e-3 collapsed k=2 (0.58 -> 0.2), as did the shuffled-reward control at
        # lr 1e-3. Held-out measurements: see the module docstring.
        fixed = v["fixed_prompts"]
        c.task_kwargs = {"num_ops": 1}
        c.model.update(d_model=64, n_layers=2, d_ff=192, max_len=48)
        c.sft.update(steps=300, batch_size=32, num_train=2000, max_len=48)
        c.rl.update(
            prompts_per_step=16,
            group_size=8,
            num_train_prompts=16 if fixed else 4000,
            max_prompt_len=8,
            max_new_tokens=36,
            steps=20 if fixed else 150,
            kl_coef=0.0 if fixed else 0.05,
        )
        c.rl_optim.lr = 1e-3 if fixed else 1e-4
        c.log_every = 1 if fixed else 5
        c.ckpt_every = 10 if fixed else 50
    k = MODES[v["mode"]] if MODES[v["mode"]] is not None else v["k"]
    c.rl.objective = v["objective"]
    # Every generated token enters the IS statistics (flat groups have zero advantage anyway).
    c.rl.drop_zero_var = False
    c.rl.rho = 2.0  # AIPO truncation (Tunix's default; sweep 1.5, 2, 5)
    c.rl.variant = v["variant"]
    c.llamarl = mlc.ConfigDict(
        dict(
            mode=v["mode"],
            max_staleness=k,
            deterministic=True,  # rollout b uses exactly version max(b - k, 0) (reproducible)
            layout="colocated" if v["mode"] == "sync" else "auto",
            trainer_devices=0,  # split layout: 0 = half of the devices
            trainer_mesh=(1, -1, 1),  # (data, fsdp, tensor) over the trainer's devices
            generator_mesh=(1, 1, -1),  # tensor-parallel generator: other specs (two-hop sync)
            generator_param_dtype="float32",  # "bfloat16": cast on send (mismatch AIPO corrects)
            queue_capacity=0,  # 0 = max(k, 1)
            bucket_mb=512.0,
            checksum=True,
            inject_latency_per_token_s=0.0,  # benchmarks: sleep per generated token
            timeout_s=300.0,  # the longest channel wait: a silent peer stops the run
            heartbeat_s=0.0,  # the generator's longest silence (0 = timeout_s); > one rollout
        )
    )
    if c.tiny:
        c.rl.update(steps=3, kl_coef=0.0)
        c.llamarl.timeout_s = 120.0
    return c
