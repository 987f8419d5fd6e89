"""Losses and jitted decoders of the three parsers (arXiv:2303.17161, Sec. 3-4).

Losses follow ``train.step``: ``loss_fn(params, frozen, batch, rng) -> (sum, denom, aux)`` with the
parser under the role ``"parser"``; the denominator is the number of examples.

Decoders are ``jax.jit`` closures ``decode(params, frozen, src_bs, src_mask_bs) -> dict``: the AR
loops are ``lax.while_loop``s with a fixed maximum number of steps, a KV cache, per-row finished
masks and early exit once every row is finished; the NAR decoder is one parallel pass followed by a
grammar-constrained argmax scan (no network calls) so that its output is also a well-formed tree.
TreePiece's span step is a joint argmax under the spec's order constraints (``parsing.spans``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from parsing.grammar import TokenGrammar, unit_allowed, unit_push
from parsing.models import causal_mask
from parsing.spans import leaf_tree_order, ordered_spans
from parsing.treepiece import NEED_INTENT

ROLE = "parser"


def _merge(graphdef, params, frozen):
    return nnx.merge(graphdef, params[ROLE], frozen.get(ROLE, {}) if frozen else {})


def encode_only(graphdef):
    """``(params, frozen, src, mask) -> memory``: the shared encoder alone (latency breakdown)."""

    def fn(params, frozen, src, src_mask):
        return _merge(graphdef, params, frozen).encode(src, src_mask)

    return fn


def _xent(logits, target, valid):
    """Summed cross-entropy over ``valid`` positions (fp32) and the number of correct argmaxes."""
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    t = jnp.maximum(target, 0)
    nll = -jnp.take_along_axis(lp, t[..., None], -1)[..., 0]
    w = valid.astype(jnp.float32)
    return jnp.sum(nll * w), jnp.sum((jnp.argmax(logits, -1) == t) * w)


def leaf_index(tables, units_bt, n_leaves: int):
    """Emission-order leaves -> (step [B, L], index inside the unit [B, L], valid [B, L])."""
    valid_u = units_bt >= 0
    nl = jnp.where(valid_u, tables["n_leaves"][jnp.maximum(units_bt, 0)], 0)
    csum = jnp.cumsum(nl, 1)
    k = jnp.arange(n_leaves)
    step = jnp.sum(csum[:, None, :] <= k[None, :, None], -1)
    step = jnp.minimum(step, units_bt.shape[1] - 1)
    before = jnp.take_along_axis(csum - nl, step, 1)
    return step, k[None] - before, k[None] < csum[:, -1:]


def _leaf_inputs(tables, h_btd, units_bt, n_leaves):
    step, j, valid = leaf_index(tables, units_bt, n_leaves)
    unit = jnp.maximum(jnp.take_along_axis(units_bt, step, 1), 0)
    h = jnp.take_along_axis(h_btd, step[..., None], 1)
    lmax = tables["leaf_label"].shape[1]
    label = jnp.take_along_axis(tables["leaf_label"][unit], jnp.clip(j, 0, lmax - 1)[..., None], 2)
    return h, unit, label[..., 0], jnp.clip(j, 0, lmax - 1), valid


# ---------------------------------------------------------------------------------- TreePiece
def make_treepiece_loss(graphdef, tables):
    tables = jax.tree.map(jnp.asarray, tables)

    def loss_fn(params, frozen, batch, rng):
        del rng
        m = _merge(graphdef, params, frozen)
        src, src_mask, units, spans = (
            batch["src"],
            batch["src_mask"],
            batch["units"],
            batch["spans"],
        )
        mem, kv = m.encode(src, src_mask)
        b, u = units.shape
        bos = jnp.full((b, 1), tables["grammar"].shape[1], jnp.int32)
        inp = jnp.concatenate([bos, jnp.maximum(units[:, :-1], 0)], 1)
        in_valid = jnp.concatenate([jnp.ones((b, 1), bool), units[:, :-1] >= 0], 1)
        pos = jnp.broadcast_to(jnp.arange(u)[None], (b, u))
        h, _ = m.decoder(m.embed(inp), pos, causal_mask(in_valid), kv, src_mask)
        unit_nll, unit_ok = _xent(m.head(h), units, units >= 0)
        hl, ul, lab, j, lv = _leaf_inputs(tables, h, units, spans.shape[1])
        s_log, e_log = m.spans(hl, ul, lab, j, lv, mem, src_mask)
        s_nll, s_ok = _xent(s_log, spans[..., 0], lv)
        e_nll, e_ok = _xent(e_log, spans[..., 1], lv)
        n_u, n_l = jnp.maximum(jnp.sum(units >= 0), 1), jnp.maximum(jnp.sum(lv), 1)
        aux = {"train/unit_acc": unit_ok / n_u, "train/span_acc": (s_ok + e_ok) / (2 * n_l)}
        return unit_nll + s_nll + e_nll, jnp.float32(b), aux

    return loss_fn


def make_treepiece_decode(graphdef, tables, max_leaves: int):
    tables = jax.tree.map(jnp.asarray, tables)

    @jax.jit
    def decode(params, frozen, src, src_mask):
        m = _merge(graphdef, params, frozen)
        mem, kv = m.encode(src, src_mask)
        b, t_max = src.shape[0], m.decoder.max_len
        k = int(tables["site_types"].shape[1]) * t_max
        # disjoint, ordered spans need a word per leaf: no more leaves than the utterance has words
        leaf_cap = jnp.minimum(max_leaves, jnp.sum(src_mask, 1).astype(jnp.int32))
        init = dict(
            t=jnp.int32(0),
            cache=m.decoder.init_cache(b),
            prev=jnp.full((b,), tables["grammar"].shape[1], jnp.int32),
            out=jnp.full((b, t_max), -1, jnp.int32),
            h=jnp.zeros((b, t_max, mem.shape[-1])),
            stack=jnp.full((b, k), NEED_INTENT, jnp.int32),
            sp=jnp.ones((b,), jnp.int32),
            done=jnp.zeros((b,), bool),
            leaves=jnp.zeros((b,), jnp.int32),
        )

        def body(s):
            t = s["t"]
            pos = jnp.full((b, 1), t)
            mask = jnp.broadcast_to((jnp.arange(t_max) <= t)[None, None], (b, 1, t_max))
            h, cache = m.decoder(m.embed(s["prev"][:, None]), pos, mask, kv, src_mask, s["cache"])
            logits = m.head(h[:, 0])
            ok = unit_allowed(
                tables, s["stack"], s["sp"], jnp.full((b,), t_max - t - 1), leaf_cap - s["leaves"]
            )
            unit = jnp.argmax(jnp.where(ok, logits, -jnp.inf), -1).astype(jnp.int32)
            active = ~s["done"]
            stack, sp = unit_push(tables, s["stack"], s["sp"], unit, active)
            return dict(
                t=t + 1,
                cache=cache,
                prev=unit,
                out=s["out"].at[:, t].set(jnp.where(active, unit, -1)),
                h=s["h"].at[:, t].set(h[:, 0]),
                stack=stack,
                sp=sp,
                done=s["done"] | (sp == 0),
                leaves=s["leaves"] + jnp.where(active, tables["n_leaves"][unit], 0),
            )

        s = jax.lax.while_loop(lambda s: (s["t"] < t_max) & ~jnp.all(s["done"]), body, init)
        hl, ul, lab, j, lv = _leaf_inputs(tables, s["h"], s["out"], max_leaves)
        s_log, e_log = m.spans(hl, ul, lab, j, lv, mem, src_mask)
        # spans jointly: inside the utterance, in the left-to-right order of their placeholders
        order = leaf_tree_order(tables, s["out"], max_leaves)
        start, end = ordered_spans(s_log, e_log, order, src_mask)
        return {
            "units": s["out"],
            "start": start,
            "end": end,
            "leaf_valid": lv,
            "steps": jnp.sum(s["out"] >= 0, 1) + 1,
            "loop_steps": s["t"],
        }

    return decode


# ---------------------------------------------------------------------------------- token AR
def _to_input(n_cls, a):
    """Output action -> decoder input id (pointers shift past WORD and BOS)."""
    return jnp.where(a >= n_cls, a + 2, jnp.maximum(a, 0))


def make_ar_loss(graphdef, n_cls: int):
    def loss_fn(params, frozen, batch, rng):
        del rng
        m = _merge(graphdef, params, frozen)
        src, src_mask, tgt = batch["src"], batch["src_mask"], batch["tgt"]
        mem, kv = m.encode(src, src_mask)
        b, t = tgt.shape
        inp = jnp.concatenate([jnp.full((b, 1), n_cls + 1), _to_input(n_cls, tgt[:, :-1])], 1)
        in_valid = jnp.concatenate([jnp.ones((b, 1), bool), tgt[:, :-1] >= 0], 1)
        pos = jnp.broadcast_to(jnp.arange(t)[None], (b, t))
        h, _ = m.decoder(m.embed_tokens(inp, mem), pos, causal_mask(in_valid), kv, src_mask)
        nll, ok = _xent(m.logits(h, mem, src_mask), tgt, tgt >= 0)
        return nll, jnp.float32(b), {"train/token_acc": ok / jnp.maximum(jnp.sum(tgt >= 0), 1)}

    return loss_fn


def make_ar_decode(graphdef, grammar: TokenGrammar):
    n_cls = grammar.n_cls

    @jax.jit
    def decode(params, frozen, src, src_mask):
        m = _merge(graphdef, params, frozen)
        mem, kv = m.encode(src, src_mask)
        b, t_max = src.shape[0], m.decoder.max_len
        init = dict(
            t=jnp.int32(0),
            cache=m.decoder.init_cache(b),
            g=grammar.init(b),
            prev=jnp.full((b,), n_cls + 1, jnp.int32),
            out=jnp.full((b, t_max), -1, jnp.int32),
        )

        def body(s):
            t = s["t"]
            mask = jnp.broadcast_to((jnp.arange(t_max) <= t)[None, None], (b, 1, t_max))
            x = m.embed_tokens(s["prev"][:, None], mem)
            h, cache = m.decoder(x, jnp.full((b, 1), t), mask, kv, src_mask, s["cache"])
            ok = grammar.allowed(s["g"], jnp.full((b,), t_max - t - 1), src_mask)
            logits = m.logits(h, mem, src_mask)[:, 0]
            a = jnp.argmax(jnp.where(ok, logits, -jnp.inf), -1).astype(jnp.int32)
            active = ~grammar.done(s["g"])
            return dict(
                t=t + 1,
                cache=cache,
                g=grammar.step(s["g"], a, active),
                prev=_to_input(n_cls, a),
                out=s["out"].at[:, t].set(jnp.where(active, a, -1)),
            )

        s = jax.lax.while_loop(
            lambda s: (s["t"] < t_max) & ~jnp.all(grammar.done(s["g"])), body, init
        )
        return {"actions": s["out"], "steps": jnp.sum(s["out"] >= 0, 1), "loop_steps": s["t"]}

    return decode


# ---------------------------------------------------------------------------------- NAR
def make_nar_loss(graphdef):
    def loss_fn(params, frozen, batch, rng):
        del rng
        m = _merge(graphdef, params, frozen)
        src, src_mask, tgt, lens = batch["src"], batch["src_mask"], batch["tgt"], batch["lens"]
        mem, kv = m.encode(src, src_mask)
        len_nll, len_ok = _xent(m.length_logits(mem, src_mask), lens, lens >= 0)
        tok_nll, tok_ok = _xent(m.forward(lens, mem, kv, src_mask), tgt, tgt >= 0)
        b = src.shape[0]
        aux = {
            "train/token_acc": tok_ok / jnp.maximum(jnp.sum(tgt >= 0), 1),
            "train/length_acc": len_ok / b,
        }
        return tok_nll + len_nll, jnp.float32(b), aux

    return loss_fn


def make_nar_decode(graphdef, grammar: TokenGrammar):
    @jax.jit
    def decode(params, frozen, src, src_mask):
        m = _merge(graphdef, params, frozen)
        mem, kv = m.encode(src, src_mask)
        b, t_max = src.shape[0], m.decoder.max_len
        length = jnp.argmax(m.length_logits(mem, src_mask)[:, 2:], -1).astype(jnp.int32) + 2
        logits_btv = m.forward(length, mem, kv, src_mask)

        def scan_fn(g, xs):
            t, logits = xs
            ok = grammar.allowed(g, length - t - 1, src_mask)
            a = jnp.argmax(jnp.where(ok, logits, -jnp.inf), -1).astype(jnp.int32)
            active = ~grammar.done(g) & (t < length)
            return grammar.step(g, a, active), jnp.where(active, a, -1)

        _, out = jax.lax.scan(
            scan_fn, grammar.init(b), (jnp.arange(t_max), logits_btv.swapaxes(0, 1))
        )
        return {"actions": out.T, "steps": jnp.ones((b,), jnp.int32), "loop_steps": jnp.int32(1)}

    return decode
