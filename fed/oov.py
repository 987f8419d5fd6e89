"""OOV expansion for personalised federated word LMs (arXiv:2305.03584, ../shared/papers/oov.md).

Each client keeps a personal vocabulary V_u (its `k_max` most frequent training words outside the
central vocabulary V, count >= `min_count`; the list never leaves the client), re-encodes its text
with ids `|V| + j` for V_u[j], and fine-tunes an adapter (E_u [k_max, d], b_u [k_max]) whose
rows are scored in one softmax with V (models/word_lm.py). E_u starts from the central model's
character encoder (the knowledge transfer) or at random (the ablation); padded slots are -inf.

Metrics: EMR@k = the target word is among the top-k predictions (ties broken towards the lower id;
an <unk> target is always a miss), OOV rate = share of target words that are <unk>, both
micro-averaged over the evaluation clients' test tokens (</s> targets excluded).
"""

from __future__ import annotations

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fed import data, simulation


def personal_vocab(train_sentences: list, vocab: set, k_max: int, min_count: int) -> list[str]:
    """The client's top `k_max` OOV words (count >= min_count), most frequent first."""
    counts = Counter(w for s in train_sentences for w in s if w not in vocab)
    ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return ranked[:k_max]


def lm_examples(sentences: list, word_to_id: dict, max_len: int) -> dict[str, np.ndarray]:
    """Sentences -> {"x": [n, max_len], "y": [n, max_len]} next-word pairs (0 = pad)."""
    seq = data.encode(sentences, word_to_id, max_len)
    return {"x": seq[:, :-1], "y": seq[:, 1:]}


def expanded_ids(word_to_id: dict, pvocab: list[str]) -> dict:
    """V plus V_u at ids |V| .. |V| + |V_u| - 1 (built on the client, never uploaded)."""
    out = dict(word_to_id)
    base = len(word_to_id)
    out.update({w: base + j for j, w in enumerate(pvocab)})
    return out


# jitted once per model structure: eager module calls would compile op by op for every client
_embed_words = nnx.jit(lambda model, chars_wc: model.embed_words(chars_wc))


def init_adapter(model, pvocab: list[str], k_max: int, mode: str, rng: jax.Array) -> dict:
    """Adapter params {"emb": [k_max, d], "bias": [k_max], "bias_v": [V]} and validity `[k_max]`.

    `bias_v` is the client's personal copy of the vocabulary biases (starts at the central ones):
    the cheap part of the personal tree that adapts word frequencies to the client.

    Args:
      model: the central WordLM.
      pvocab: the client's personal words (<= k_max).
      k_max: padded adapter size.
      mode: "char" (central char encoder, the method) or "random" (same scale, random).
      rng: key for the random init.
    """
    chars = data.chars_of(pvocab + [""] * (k_max - len(pvocab)), model.cfg.max_chars)
    base = _embed_words(model, model.vocab_chars.value)
    if mode == "char":
        emb = _embed_words(model, jnp.asarray(chars))
    elif mode == "random":
        emb = jax.random.normal(rng, (k_max, base.shape[1])) * jnp.std(base)
    else:
        raise ValueError(f"unknown adapter init {mode!r}; use 'char' or 'random'")
    valid = np.arange(k_max) < len(pvocab)
    # New words are rare: start their bias at the vocabulary's mean, not above frequent words.
    bias = jnp.full((k_max,), jnp.mean(model.bias.value))
    return {"emb": emb * valid[:, None], "bias": bias, "bias_v": model.bias.value}, valid


def token_ce(logits_btv, y_bt, mask_bt):
    """Summed next-word cross-entropy over real tokens and their count."""
    logp = jax.nn.log_softmax(logits_btv, -1)
    nll = -jnp.take_along_axis(logp, y_bt[..., None], -1)[..., 0]
    nll = jnp.where(mask_bt, nll, 0.0)
    return jnp.sum(nll), jnp.sum(mask_bt).astype(jnp.float32)


def client_logits(model, personal: dict, x_bt, valid_k, *, adapter: bool) -> jax.Array:
    """The client's model: logits `[B, T, V (+k_max)]` for training and for evaluation alike.

    One function for both, so that what is evaluated is the model that was trained: with
    `adapter`, every part of the personal tree (E_u, b_u and the personal vocabulary biases b_V)
    enters the scores.
    """
    if not adapter:
        return model(x_bt)
    return model(
        x_bt,
        oov_emb_kd=personal["emb"],
        oov_bias_k=personal["bias"],
        oov_valid_k=valid_k,
        bias_v=personal["bias_v"],
    )


def make_loss_fn(graphdef, rest, *, adapter: bool, share_char_encoder: bool = False):
    """`loss(shared, personal, batch, mask_b) -> (loss_sum, denom)` for the client work.

    With `adapter`, `personal` is {"emb", "bias", "bias_v"} and each example carries the
    client's slot validity in `batch["valid"]` ([B, k], identical rows). With
    `share_char_encoder`, `shared` is the client tree of `make_table_lift`: {"params", "table"}.
    """

    def loss_fn(shared, personal, batch, mask_b):
        if share_char_encoder:
            model = nnx.merge(graphdef, shared["params"], rest)
            # forward with the round's frozen table; the gradient goes to the "table" leaf, whose
            # SGD delta therefore accumulates -lr * sum of the table gradients
            sg = jax.lax.stop_gradient
            table = sg(shared["frozen_table"]) + shared["table"] - sg(shared["table"])
            logits = model(batch["x"], table_vd=table)
            mask_bt = (batch["y"] > 0) & mask_b[:, None]
            return token_ce(logits, batch["y"], mask_bt)
        model = nnx.merge(graphdef, shared, rest)
        valid_k = batch["valid"][0] if adapter else None
        logits = client_logits(model, personal, batch["x"], valid_k, adapter=adapter)
        mask_bt = (batch["y"] > 0) & mask_b[:, None]
        return token_ce(logits, batch["y"], mask_bt)

    return loss_fn


def make_table_lift(graphdef, rest):
    """`lift(shared) -> {"params": shared, "table", "frozen_table": [V, d]}` (share_char_encoder).

    An algorithm change (not exact FedAvg): the char encoder is frozen during local training; the
    vocabulary table it produces is computed once per round by the server, outside the clients,
    and stays fixed in every local step (`frozen_table`, forward only). The clients' "table" leaf
    only accumulates the table gradients (its delta is -lr * their sum; the char-encoder
    parameters get no gradient, so their delta is 0), and the server pulls the averaged table
    delta back onto the encoder through its VJP at the round's weights
    (`simulation.make_fed_avg(lift=...)`). So the encoder still learns, by the sum of its local
    gradients taken at a frozen encoder instead of along each client's trajectory: exact FedAvg
    for one local step, first-order otherwise. Clients skip the char CNN, ~87% of a local step's
    FLOPs. (Training the table locally as a free embedding instead, the first version, cut the
    OOV table's top-3 from 0.42 to 0.24: the rest of the model co-adapted to table moves that
    the server never makes.)
    """

    def lift(shared):
        model = nnx.merge(graphdef, shared, rest)
        table = model.embed_words(model.vocab_chars[...])
        return {"params": shared, "table": table, "frozen_table": table}

    return lift


def emr_counts(logits_btv, y_bt, mask_bt, unk_id: int, eos_id: int) -> dict[str, jax.Array]:
    """Top-1/top-3 hits, token count and <unk>-target count over real word targets."""
    real = mask_bt & (y_bt != eos_id)
    _, top3 = jax.lax.top_k(logits_btv, 3)  # ties: lower index first (deterministic)
    hit = (top3 == y_bt[..., None]) & (y_bt != unk_id)[..., None]
    return {
        "top1": jnp.sum(hit[..., 0] & real),
        "top3": jnp.sum(jnp.any(hit, -1) & real),
        "tokens": jnp.sum(real),
        "oov": jnp.sum((y_bt == unk_id) & real),
    }


def make_personalise_work(
    graphdef, rest, *, adapter: bool, lr: float, train_shared: bool, adapter_lr: float
):
    """Client work for personalisation: local SGD, then metrics on `extra` (the test split)."""
    loss_fn = make_loss_fn(graphdef, rest, adapter=adapter)
    base = simulation.make_sgd_client_work(
        loss_fn, lr, train_shared=train_shared, train_personal=adapter, personal_lr=adapter_lr
    )
    unk_id, eos_id = 1, 3

    def final(shared, cstate, test):
        model = nnx.merge(graphdef, cstate["shared"], rest)
        p = cstate["personal"]
        valid_k = test["valid"] if adapter else None
        logits = client_logits(model, p, test["x"], valid_k, adapter=adapter)
        counts = emr_counts(logits, test["y"], test["y"] > 0, unk_id, eos_id)
        zero = jax.tree.map(jnp.zeros_like, shared)  # nothing is uploaded
        return simulation.ClientOutput(zero, jnp.zeros(()), p, counts)

    return simulation.ClientWork(base.init, base.step, final)


def param_bytes(tree) -> int:
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def server_tx(name: str, lr: float) -> optax.GradientTransformation:
    if name == "fedavg":
        return simulation.fed_avg_tx(lr)
    if name == "fedadam":
        return simulation.fed_adam_tx(lr)
    raise ValueError(f"unknown server optimizer {name!r}; use 'fedavg' or 'fedadam'")
