"""TreePiece semantic parsing (arXiv:2303.17161) and its token-AR / NAR baselines.

Usage:
  python -m launch.main --config=configs/treepiece.py --workdir=/tmp/tp
  python -m launch.main --config=configs/treepiece.py:model=ar --workdir=/tmp/tp_ar
  python -m launch.main --config=configs/treepiece.py:tiny --workdir=/tmp/tp_tiny

Variants: ``model=treepiece|ar|nar`` (default treepiece), ``tiny`` (2 training steps, a few
hundred examples, seconds), ``atomic`` (TreePiece with atomic units only: separates the
tokeniser's gain from the architecture's), ``paper`` (paper-like regime: a 6-layer decoder on a
1-layer encoder and more nested parses; ``bench/results/treepiece_paper.md``).
``--config.data_dir=/path/to/TOPv2`` trains on local TOPv2 TSV files
(``<domain>_{train,eval,test}.tsv``; ``--config.domains=weather,reminder``) instead of the
generated data.

Default: generated TOP-style data (8k train / 1k test), d_model 64 with 2 encoder + 2 decoder
layers, 800 steps of batch 32: a few minutes on an idle 2-core CPU (about 10 under heavy load).
Prints exact match (test, and the compositional split of unseen nestings), decoder steps and
per-utterance latency at batch 1 and 32; expect test exact match 0.97-0.99 for treepiece and ar,
about 0.96 for nar. The compositional split (held-out pairs of nestings whose parts are seen) is
hard: 0 for treepiece, about 0.1 for the atomic-unit variant (bench/results/
treepiece_compositional.md). ``bench/treepiece.py`` runs all systems side by side (results in
bench/results/treepiece.md).
"""

from __future__ import annotations

import ml_collections as mlc

from configs.common import base_config, optim_config, parse_variant

DEFAULTS = {"model": "treepiece", "tiny": False, "atomic": False, "paper": False}


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    v = parse_variant(arg, DEFAULTS, {"model": ("treepiece", "ar", "nar")})
    c = base_config("treepiece", v)
    c.system = v["model"]
    tiny = v["tiny"]
    c.data_dir = ""  # non-empty: read TOPv2 TSVs from here instead of generating data
    c.domains = ""  # comma-separated TOPv2 domains ('' = all files found)
    c.data = mlc.ConfigDict(
        dict(
            n_train=200 if tiny else 8000,
            n_valid=50 if tiny else 500,
            n_test=64 if tiny else 1000,
            n_compositional=32 if tiny else 500,
            p_nest=0.25,
            max_depth=3,
        )
    )
    c.tokenizer = mlc.ConfigDict(
        dict(
            vocab_size=400,
            max_arity=6,
            em_iters=2 if tiny else 5,
            atomic_only=v["atomic"],
        )
    )
    c.model = mlc.ConfigDict(
        dict(
            d_model=32 if tiny else 64,
            enc_layers=1 if tiny else 2,
            dec_layers=1 if tiny else 2,
            n_heads=4,
            d_ff=64 if tiny else 256,
            max_src=32,
            # decoder length: units for treepiece, actions for the token-level systems
            max_tgt=16 if v["model"] == "treepiece" else 32,
            max_leaves=8,
            stack_depth=8,
        )
    )
    if v["paper"] and not tiny:
        # Paper-like regime (issue 19 item 3): the decoder much larger than the encoder (the paper
        # decodes with a large seq2seq decoder) and more nested, longer parses; the decoder step,
        # which TreePiece saves, then dominates the latency instead of the encoder.
        c.data.p_nest = 0.7
        c.model.update(enc_layers=1, dec_layers=6)
        c.model.max_tgt = 16 if v["model"] == "treepiece" else 40
    c.batch_size = 8 if tiny else 32
    c.num_steps = 2 if tiny else 800
    c.optim = optim_config(lr=2e-3, warmup_steps=1 if tiny else 50, total_steps=c.num_steps)
    c.log_every = 1 if tiny else 100
    c.ckpt_every = 0 if tiny else 200
    c.eval_batch = 32
    c.latency_repeats = 3 if tiny else 50
    # batch sizes timed for latency (each is its own compiled decoder; tiny times batch 1 only)
    c.latency_batches = (1,) if tiny else (1, 32)
    return c
