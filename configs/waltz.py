"""WaltzRL (arXiv:2510.08240): a conversation agent and a feedback agent trained together with
the Dynamic Improvement Reward, on the synthetic safety world (rl/waltz_world.py).

Default (`--config=configs/waltz.py`): two 2-layer d=64 causal LMs (vocab 52) get short SFT warm
starts on a noisy oracle (the conversation agent complies with ~40% of harmful prompts and
refuses ~50% of benign-sensitive ones; the feedback agent writes valid JSON ~75% of the time),
then stage 1 (feedback agent only; alpha, lambda, gamma on) and stage 2 (joint; lambda = 0, DIR
gated on the label). It prints ASR / ORR / FTR / label accuracy / JSON validity / DIR fractions
for the untrained pair, the safeguard and oracle-template baselines, after stage 1 and at the
end. Measured: 307 s on a heavily shared 2-core CPU (seed 0: untrained pair ASR 39.1% / ORR
28.1% -> final 0.0% / 0.8%; stage 1 label accuracy 60.7% -> 97.9%, JSON validity 74.7% ->
98.4%). See bench/waltz.py (bench/results/waltz.md) for 3 seeds with intervals and ablations.

Variants (after the colon, comma-separated):
  stage=both|1|2              which RL stages to run (2 alone starts from the warm start)
  gate=true|false             gate DIR on label correctness (false: ablation)
  frozen_conversation         stage 2 trains only the feedback agent (co-evolution ablation)
  single                      single-model safety RL baseline (conversation agent alone, R_c)
  judge=synthetic|keyword|classifier   the synthetic world is scored by `synthetic`; `keyword`
                              is the rule judge for real text (rl/waltz_world.keyword_judge);
                              `classifier` needs local weights in `classifier_dir`
  tiny                        2 steps of every stage on a tiny model (tests)

The paper's own runs use Llama-3.1-8B-Instruct for both agents on WildJailbreak + OR-Bench
prompts with an LLM judge (8+ GPUs); that scale is not configured here.
"""

import ml_collections as mlc

from configs import common


def get_config(arg=None):
    v = common.parse_variant(
        arg,
        {
            "stage": "both",
            "gate": True,
            "frozen_conversation": False,
            "single": False,
            "judge": "synthetic",
            "tiny": False,
        },
        {"stage": ("both", "1", "2"), "judge": ("synthetic", "keyword", "classifier")},
    )
    c = common.base_config("waltz", v)
    c.stage = v["stage"]
    c.gate = v["gate"]
    c.frozen_conversation = v["frozen_conversation"]
    c.single = v["single"]
    c.judge = v["judge"]
    c.classifier_dir = ""
    c.model = common.model_config(d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=128)
    c.model.max_len = 32
    c.sft = mlc.ConfigDict(dict(steps=300, batch_size=64, num_train=4096))
    c.sft_optim = common.optim_config(lr=3e-3, warmup_steps=20, total_steps=300)
    rl_opt = dict(lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.0, clip_norm=1.0)
    c.rl_optim = mlc.ConfigDict({"conversation": dict(rl_opt), "feedback": dict(rl_opt)})
    c.rl = mlc.ConfigDict(
        dict(
            stage1_steps=40,
            stage2_steps=80,
            batch_size=64,  # trajectories per step (one protocol round each)
            inner_updates=2,  # PPO epochs over each rollout batch
            num_train_prompts=4096,
            num_eval=384,
            temperature=1.0,
            alpha=1.0,  # DIR weight
            lam=0.5,  # additive label reward (stage 1 only; stage 2 uses 0)
            gamma=0.5,  # format reward
            clip_eps=0.2,
            kl_coef=0.01,
            conv_mix="ab",  # type A + type B conversation samples ("a", "b" for ablations)
        )
    )
    c.log_every = 10
    if c.tiny:
        common.tiny_model(c.model)
        c.sft.update(steps=2, batch_size=8, num_train=64)
        c.rl.update(stage1_steps=2, stage2_steps=2, batch_size=8, num_eval=12, inner_updates=1)
        c.log_every = 1
    return c
