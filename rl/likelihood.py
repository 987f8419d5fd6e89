"""Likelihood estimators for masked-diffusion LMs: ELBO, EUBO, their mixture and the one-step
mean-field estimate (SPG, arXiv:2510.09541, §3-4; d1 arXiv:2504.12216).

Everything is vectorised over `[batch, mc_samples, time]` with static shapes:

- `draw_masks` perturbs completions `x` into `z ~ q(.|x)` (the loss set `M_j` and a per-sample
  weight `w_j`) with one of four procedures:
  `random` (k ~ U{1..L} uniform positions, w = L/k: an unbiased estimate of the continuous-time
  ELBO, eq. 2 with w(t) = 1/t), `block` (the reference `block_random` procedure, see below),
  `all` (the whole completion masked: d1's one-step view, w = 1).
- `elbo`:  (1/m) sum_j w_j sum_{i in M_j} log pi(x_i | z_j)                   (eq. 2, MC)
- `eubo`:  (1/beta) sum_i log[(1/m) sum_j w_j 1[i in M_j] pi^beta(x_i | z_j)]  (Cor. 1),
  computed as a logsumexp over samples, so p^beta never underflows and no position is dropped
  silently: positions no sample scored are counted and the sum is rescaled by L / |U|, the
  reference's per-token average times L (made explicit here).
- `mix`:   omega * EUBO + (1 - omega) * ELBO                                  (eq. 8).
- `mean_field`: sum_i log pi(x_i | all completion masked)                     (d1).

`block` masking (paper §2 / reference `forward_type="block_random"`), L = valid tokens through the
first EOS, Lb = ceil(L / B): pick b* ~ U{0..Lb-1}; mask every later block and every position past
the first EOS; inside b*, with nv = min(B, L - B b*) valid tokens, mask a uniform k-subset with
k ~ U{1..nv}. Two weightings:
  `parity`: earlier blocks are masked i.i.d. with `p_mask_prompt` too, the loss set is every masked
    valid token, and w = 1 / t_hat = L / |M| (the reference weights, bug 5 included).
  `exact`: earlier blocks stay clean, only b*'s tokens are scored with w = Lb * nv / k, the inverse
    inclusion probability. This is an unbiased ELBO of the block-autoregressive factorisation
    log p(x) = sum_b log p(x_b | x_<b), the one the semi-AR sampler decodes with.
The reference draws b* from a permutation reduced mod Lb; here b* is uniform and independent per
sample (documented deviation; the reference's is only approximately uniform).

Bounds: ELBO <= log p(x) always; the continuous EUBO is an upper bound for beta >= n (Hoelder,
Theorem 1 with C(T) = 0); for 1 <= beta < n it is one up to the theta-independent constant C(T).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

MODES = ("random", "block", "all")
WEIGHTINGS = ("parity", "exact")


class MaskDraw(NamedTuple):
    """One batched perturbation of completions.

    Attributes:
      masked: bool [B, m, G], positions replaced by the mask token in the model input.
      scored: bool [B, m, G], the loss set M_j (a subset of masked and valid).
      weight: float32 [B, m], the per-sample weight w_j of scored tokens.
      prompt_masked: bool [B, m, P], prompt positions replaced by the mask token (never scored).
    """

    masked: jax.Array
    scored: jax.Array
    weight: jax.Array
    prompt_masked: jax.Array


def completion_valid(completion_bg: jax.Array, eos_id: int) -> jax.Array:
    """bool [B, G]: tokens up to and including the first EOS (all tokens if there is none)."""
    is_eos = completion_bg == eos_id
    before = jnp.cumsum(is_eos, axis=-1) - is_eos  # EOS tokens strictly before each position
    return before == 0


def _ranks(noise, candidate):
    """Rank of each candidate's noise among candidates of its row (non-candidates rank last)."""
    keyed = jnp.where(candidate, noise, 2.0)
    return jnp.argsort(jnp.argsort(keyed, axis=-1, stable=True), axis=-1, stable=True)


def _uniform_int(u, low, high):
    """Integer uniform on {low..high} inclusive from uniforms `u`, array bounds (high >= low)."""
    return low + jnp.minimum(jnp.floor(u * (high - low + 1)), high - low).astype(jnp.int32)


def draw_masks(
    rng: jax.Array,
    valid_bg: jax.Array,
    prompt_mask_bp: jax.Array,
    *,
    num_samples: int,
    mode: str = "block",
    weighting: str = "parity",
    block_len: int = 32,
    p_mask_prompt: float = 0.15,
    share_within: int = 1,
) -> MaskDraw:
    """Draws `num_samples` perturbations per completion (see the module docstring).

    Args:
      rng: PRNG key (independent of rollout keys).
      valid_bg: bool [B, G], completion tokens through the first EOS.
      prompt_mask_bp: bool [B, P], real prompt tokens.
      num_samples: m.
      mode: "random", "block" or "all".
      weighting: "parity" (reference) or "exact" (see module docstring).
      block_len: B for block mode.
      p_mask_prompt: probability of masking each real prompt token (and, in block/parity mode,
        each token of the clean earlier blocks).
      share_within: rows in consecutive runs of this size (one prompt's group) share their
        random numbers (common random numbers). Each row's draw keeps its distribution, so the
        estimators stay unbiased, but tokens the completions of a group share are perturbed
        alike, so their gradients cancel across positive and negative advantages instead of
        adding MC noise (a variance reduction, not in the paper; 1 = independent rows).

    Returns:
      MaskDraw with static shapes.
    """
    if mode not in MODES:
        raise ValueError(f"mask mode {mode!r} not in {MODES}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting {weighting!r} not in {WEIGHTINGS}")
    b, g = valid_bg.shape
    m = num_samples
    # Keys per row (fold_in of the row index) and per prompt position counted from the right, so
    # padding rows and left padding never change the draws of real rows.
    row_keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(b) // share_within)
    sub = jax.vmap(lambda k: jax.random.split(k, 5))(row_keys)  # [B, 5]
    k_b, k_k, k_n, k_p, k_e = (sub[:, i] for i in range(5))
    per_row = lambda f, keys: jax.vmap(f)(keys)  # noqa: E731
    valid = jnp.broadcast_to(valid_bg[:, None, :], (b, m, g))
    length = jnp.maximum(jnp.sum(valid_bg, axis=-1), 1)[:, None]  # [B, 1]
    p = prompt_mask_bp.shape[1]

    def prompt_noise(k):
        u = jax.vmap(lambda j: jax.random.uniform(jax.random.fold_in(k, j), (m,)))(
            jnp.arange(p)[::-1]
        )
        return u.T  # [m, P]

    prompt_masked = prompt_mask_bp[:, None, :] & (per_row(prompt_noise, k_p) < p_mask_prompt)
    uniform = lambda keys, shape: per_row(lambda k: jax.random.uniform(k, shape), keys)  # noqa: E731
    noise = uniform(k_n, (m, g))
    pos = jnp.arange(g)
    if mode == "all":
        masked = jnp.ones((b, m, g), bool)
        return MaskDraw(masked, valid, jnp.ones((b, m), jnp.float32), prompt_masked)
    if mode == "random":
        k = _uniform_int(uniform(k_k, (m,)), 1, length)
        chosen = _ranks(noise, valid) < k[..., None]
        masked = (chosen & valid) | ~valid
        scored = masked & valid
        weight = length.astype(jnp.float32) / k.astype(jnp.float32)
        return MaskDraw(masked, scored, weight, prompt_masked)
    # Block-wise masking.
    nblocks = (length + block_len - 1) // block_len  # [B, 1]
    bstar = _uniform_int(uniform(k_b, (m,)), 0, nblocks - 1)
    blk = pos // block_len
    nv = jnp.minimum(block_len, length - block_len * bstar)  # [B, m]
    k = _uniform_int(uniform(k_k, (m,)), 1, nv)
    in_star = (blk[None, None, :] == bstar[..., None]) & valid
    chosen = in_star & (_ranks(noise, in_star) < k[..., None])
    later = blk[None, None, :] > bstar[..., None]
    earlier = (blk[None, None, :] < bstar[..., None]) & valid
    if weighting == "parity":
        earlier_hit = earlier & (uniform(k_e, (m, g)) < p_mask_prompt)
        masked = chosen | later | ~valid | earlier_hit
        scored = masked & valid
        weight = length.astype(jnp.float32) / jnp.maximum(jnp.sum(scored, -1), 1)
    else:
        masked = chosen | later | ~valid
        scored = chosen
        weight = (nblocks * nv).astype(jnp.float32) / k.astype(jnp.float32)
    return MaskDraw(masked, scored, weight, prompt_masked)


def subs_logits(logits: jax.Array, mask_id: int) -> jax.Array:
    """Logits with the mask token removed from the support (logit -inf), MDLM's SUBS."""
    return logits.at[..., mask_id].set(-jnp.inf)


def completion_logps(model, prompt_bp, prompt_mask_bp, completion_bg, draw: MaskDraw, mask_id):
    """log pi(x_i | z_j) for every completion position, fp32 [B, m, G].

    The distribution excludes the mask token (SUBS), the same normalisation the sampler uses.

    One forward pass over all m perturbations: the batch is [B*m, P+G] with the prompt's key
    padding mask, so left padding is never attended to.
    """
    b, m, g = draw.masked.shape
    p = prompt_bp.shape[1]
    prompt_in = jnp.where(draw.prompt_masked, mask_id, prompt_bp[:, None, :])
    z = jnp.where(draw.masked, mask_id, completion_bg[:, None, :])
    tokens = jnp.concatenate([prompt_in, z], axis=-1).reshape(b * m, p + g)
    key_mask = jnp.concatenate([prompt_mask_bp, jnp.ones((b, g), bool)], axis=-1)
    key_mask = jnp.broadcast_to(key_mask[:, None, :], (b, m, p + g)).reshape(b * m, p + g)
    logits = model(tokens, mask_bt=key_mask).logits[:, p:].astype(jnp.float32)
    # MDLM's SUBS parameterisation, as in the sampler (`rl.sampling.diffusion`): the mask token is
    # never a clean token, so its logit is -inf and the softmax normalises over the rest. The
    # policy that is scored is then exactly the one that is sampled.
    logp = jax.nn.log_softmax(subs_logits(logits, mask_id), axis=-1)
    tgt = jnp.broadcast_to(completion_bg[:, None, :], (b, m, g)).reshape(b * m, g)
    return jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0].reshape(b, m, g)


def elbo(ll_bmg: jax.Array, scored_bmg: jax.Array, weight_bm: jax.Array) -> jax.Array:
    """Sequence ELBO [B]: (1/m) sum_j w_j sum_{i in M_j} l_ij."""
    per = jnp.sum(jnp.where(scored_bmg, ll_bmg, 0.0), axis=-1)
    return jnp.mean(weight_bm * per, axis=-1)


def eubo(
    ll_bmg: jax.Array,
    scored_bmg: jax.Array,
    weight_bm: jax.Array,
    beta: float,
    length_b: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Sequence EUBO [B] in log space, and the fraction of valid positions it covered [B].

    S_i = (1/m) sum_j w_j 1[i in M_j] p_ij^beta, computed as logsumexp_j(beta l_ij + log w_j) -
    log m. Positions no sample scored are not dropped silently: the sum over the covered set U is
    rescaled by L / |U| (if `length_b` is given), and the coverage is returned for logging.
    """
    m = ll_bmg.shape[1]
    a = jnp.where(scored_bmg, beta * ll_bmg + jnp.log(weight_bm)[..., None], -jnp.inf)
    hit = jnp.any(scored_bmg, axis=1)  # [B, G]
    lse = jax.scipy.special.logsumexp(jnp.where(hit[:, None, :], a, 0.0), axis=1, b=None)
    # logsumexp over an all -inf column would be -inf; those columns are excluded via `hit`.
    per_tok = jnp.where(hit, (lse - jnp.log(m)) / beta, 0.0)
    covered = jnp.sum(hit, axis=-1).astype(jnp.float32)
    total = jnp.sum(per_tok, axis=-1)
    if length_b is None:
        return total, covered
    length = length_b.astype(jnp.float32)
    scaled = jnp.where(covered > 0, total * length / jnp.maximum(covered, 1.0), 0.0)
    return scaled, covered / jnp.maximum(length, 1.0)


def mix(elbo_b: jax.Array, eubo_b: jax.Array, omega: float) -> jax.Array:
    """The omega-mixture omega * EUBO + (1 - omega) * ELBO (eq. 8)."""
    return omega * eubo_b + (1.0 - omega) * elbo_b


def mean_field(ll_bmg: jax.Array, scored_bmg: jax.Array) -> jax.Array:
    """d1's one-step estimate [B]: mean over samples of sum_i log pi(x_i | all masked)."""
    return jnp.mean(jnp.sum(jnp.where(scored_bmg, ll_bmg, 0.0), axis=-1), axis=-1)
