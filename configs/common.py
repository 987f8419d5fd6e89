"""Shared config pieces: variant parsing after the colon, defaults, the `tiny` helper.

`--config=configs/spg.py:task=countdown,bound=eubo,tiny` calls `get_config("task=countdown,...")`;
`parse_variant` turns that string into a dict, rejecting keys the config does not declare. Configs
are plain data and import nothing from the packages.
"""

from __future__ import annotations

import ml_collections as mlc


def _coerce(text: str, default):
    if isinstance(default, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on", ""):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text


def parse_variant(arg: str | None, defaults: dict, choices: dict | None = None) -> dict:
    """Parses `key=value,flag,...` into a dict over `defaults`.

    Args:
      arg: the text after the colon in `--config=path:arg` (or None).
      defaults: every accepted key with its default; the default's type coerces the value.
        A bare word `flag` means `flag=True` (e.g. `tiny`).
      choices: optional allowed values per key.

    Raises:
      ValueError: an unknown key, a bad value, or a value outside `choices`, naming it.
    """
    out = dict(defaults)
    choices = choices or {}
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(
                f"unknown config variant key {key!r}; known keys: {', '.join(sorted(defaults))}"
            )
        try:
            out[key] = _coerce(value.strip() if sep else "", defaults[key])
        except ValueError as e:
            raise ValueError(f"bad value for config variant {key!r}: {e}") from None
        if key in choices and out[key] not in choices[key]:
            allowed = ", ".join(map(str, choices[key]))
            raise ValueError(f"config variant {key}={out[key]!r} is not one of {allowed}")
    return out


# Fields renamed so that each concept has one name across configs (issue 13): old -> new. A config
# or a caller that still sets an old name is refused with the new one (launch.workdir and
# rl.objectives check it; on the command line the locked config refuses unknown keys).
RENAMED = {
    "rl.inner_steps": "rl.inner_updates",
    "rl.eval_batch": "rl.eval_batch_size",
    "rl.kl_beta": "rl.kl_coef",
    "rl.ref_kl": "rl.kl_coef",
}


def base_config(experiment: str, variant: dict) -> mlc.ConfigDict:
    """Fields every experiment has."""
    c = mlc.ConfigDict()
    c.experiment = experiment
    c.variant = ",".join(f"{k}={v}" for k, v in sorted(variant.items()))
    c.seed = 0
    c.tiny = bool(variant.get("tiny", False))
    c.log_every = 10
    c.eval_every = 0
    c.ckpt_every = 50
    c.keep_checkpoints = 2
    c.max_consecutive_skips = 20  # stop (exit 2) after more skipped updates in a row; 0: never
    c.mesh_shape = (-1, 1, 1)  # (data, fsdp, tensor) over all devices; -1 takes the rest
    # Generated task examples: "tfds" builds each split once as array_record ($LMRL_TFDS_DIR,
    # default ~/.cache/lmrl/tfds) and reads it through tfds + grain (data/source.py); "memory"
    # generates them in the process (same examples, no files).
    c.data_source = "tfds"
    return c


def model_config(**overrides) -> mlc.ConfigDict:
    """Transformer hyper-parameters (see models/transformer.py)."""
    m = mlc.ConfigDict(
        dict(
            vocab_size=0,  # 0: taken from the tokenizer at run time
            d_model=128,
            n_layers=4,
            n_heads=4,
            n_kv_heads=2,
            d_ff=384,
            max_len=128,
            causal=True,
            rope_theta=10000.0,
            param_dtype="float32",
            dtype="float32",
            norm_eps=1e-6,
            tie_embeddings=False,
            scan_layers=False,  # blocks stacked and run under lax.scan (faster compiles at depth)
            remat="none",  # none|full|dots|dots_no_batch: activation recomputation per block
        )
    )
    m.update(overrides)
    return m


def optim_config(**overrides) -> mlc.ConfigDict:
    """AdamW + warmup/cosine + clipping (see train/optim.py)."""
    o = mlc.ConfigDict(
        dict(
            lr=1e-3,
            warmup_steps=20,
            total_steps=1000,
            weight_decay=0.0,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            clip_norm=1.0,
            schedule="cosine",
            optimizer="adamw",
            min_lr_ratio=0.1,
        )
    )
    o.update(overrides)
    return o


TINY_MODEL = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=64)


def tiny_model(m: mlc.ConfigDict) -> mlc.ConfigDict:
    """Shrinks a model config to seconds-on-one-core size."""
    m.update(TINY_MODEL)
    return m
