"""TreePiece experiment runner (arXiv:2303.17161): data, tokeniser, training, exact match, latency.

``run(config, workdir)`` trains the parser chosen by ``config.system`` (``treepiece``, ``ar`` or
``nar``) through the shared runtime (``train.runtime``: the mesh from ``config.mesh_shape``, the
state created sharded, restore, the jitted update step; ``train.loop.fit``; ``finish``), then
decodes the test (and compositional) split with the jitted decoder and reports exact match on
decoupled trees, the fraction of well-formed outputs, mean decoder steps and per-utterance latency
at the batch sizes of ``config.latency_batches`` (1 and 32; tiny: 1). ``bench/treepiece.py``
reuses ``prepare`` / ``train_system`` / ``evaluate`` / ``latency``.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from flax import nnx

from parsing import features as F
from parsing import systems
from parsing.data import INTENTS, LEXICON, NESTINGS, SUB_INTENTS, generate, load_topv2
from parsing.models import ARParser, NARParser, TreePieceParser
from parsing.tree import TopParseError, parse_top, skeleton
from parsing.treepiece import TreePiece
from train.checkpoint import Checkpointer
from train.loop import fit
from train.optim import make_optimizer
from train.runtime import Runtime, finish
from train.state import TrainState, split_module


def _ontology_labels():
    return {"IN:" + n for n in list(INTENTS) + list(SUB_INTENTS)} | {
        "SL:" + n for n in list(LEXICON) + list(NESTINGS)
    }


def prepare(config, workdir: str | None = None) -> dict:
    """Loads/generates the splits, builds the vocabularies and the TreePiece tokeniser.

    The tokeniser is saved as ``workdir/treepiece_vocab.json`` and reloaded on resume.
    """
    d = config.data
    if config.data_dir:
        domains = [x for x in config.domains.split(",") if x] or None
        splits, extra = load_topv2(config.data_dir, domains), ()
    else:
        splits = generate(
            {
                "train": d.n_train,
                "valid": d.n_valid,
                "test": d.n_test,
                "compositional": d.n_compositional,
            },
            seed=config.seed,
            p_nest=d.p_nest,
            max_depth=d.max_depth,
        )
        extra = _ontology_labels()
    vocab = F.Vocab.build(splits["train"], extra)
    tk = config.tokenizer
    path = os.path.join(workdir, "treepiece_vocab.json") if workdir else None
    if path and os.path.exists(path):
        tp = TreePiece.load(path)
    else:
        skels = [skeleton(ex.tree)[0] for ex in splits["train"]]
        size = 0 if tk.atomic_only else tk.vocab_size
        tp = TreePiece.train(
            skels,
            vocab_size=size,
            max_arity=tk.max_arity,
            em_iters=tk.em_iters,
            labels=vocab.labels,
        )
        if path:
            os.makedirs(workdir, exist_ok=True)
            tp.save(path)
    return {"splits": splits, "vocab": vocab, "tp": tp, "tables": F.unit_tables(tp, vocab)}


def _train_arrays(config, prep) -> dict[str, np.ndarray]:
    m, train = config.model, prep["splits"]["train"]
    src, src_mask = F.source(train, prep["vocab"], m.max_src)
    ok = np.array([len(ex.tokens) <= m.max_src for ex in train])
    arrays = {"src": src, "src_mask": src_mask}
    if config.system == "treepiece":
        units, spans, fits = F.unit_targets(train, prep["tp"], m.max_tgt, m.max_leaves)
        arrays.update(units=units, spans=spans)
        ok &= fits
    else:
        tgt, lens = F.token_targets(train, prep["vocab"], m.max_tgt)
        arrays.update(tgt=tgt, lens=lens)
        ok &= lens >= 0
    return {k: v[ok] for k, v in arrays.items()}


def _model(config, prep):
    """The parser module for ``config.system`` (freshly initialised from ``config.seed``)."""
    m, vocab = config.model, prep["vocab"]
    rngs = nnx.Rngs(params=config.seed)
    n_src = len(vocab.words)
    if config.system == "treepiece":
        t = prep["tables"]
        return TreePieceParser(
            n_src,
            len(prep["tp"].units),
            max(1, len(vocab.slot_labels)),
            t["leaf_label"].shape[1],
            m,
            rngs=rngs,
        )
    cls = ARParser if config.system == "ar" else NARParser
    return cls(n_src, len(vocab.labels) + 1, m, rngs=rngs)


def _loss_and_decode(config, prep, graphdef):
    """The loss and the jitted decoder of ``config.system`` for a model graphdef."""
    m, vocab = config.model, prep["vocab"]
    if config.system == "treepiece":
        t = prep["tables"]
        return (
            systems.make_treepiece_loss(graphdef, t),
            systems.make_treepiece_decode(graphdef, t, m.max_leaves),
        )
    grammar = vocab.grammar(m.stack_depth)
    if config.system == "ar":
        n_cls = len(vocab.labels) + 1
        return systems.make_ar_loss(graphdef, n_cls), systems.make_ar_decode(graphdef, grammar)
    return systems.make_nar_loss(graphdef), systems.make_nar_decode(graphdef, grammar)


def build(config, prep):
    """The parser module, its loss and its jitted decoder for ``config.system``."""
    model = _model(config, prep)
    return (model, *_loss_and_decode(config, prep, split_module(model)[0]))


def build_graphdef(config, prep):
    return split_module(nnx.eval_shape(lambda: _model(config, prep)))[0]


def _init(config, prep, tx):
    def init():
        _, params, frozen = split_module(_model(config, prep))
        return TrainState.create(
            {systems.ROLE: params}, tx, jax.random.key(config.seed), frozen={systems.ROLE: frozen}
        )

    return init


def dry_run_parts(config):
    """`--dry_run`: the parser's update (data and the TreePiece tokeniser are built, no model)."""
    from train.dry_run import DryRunParts

    prep = prepare(config)
    loss_fn, _ = _loss_and_decode(config, prep, build_graphdef(config, prep))
    tx = make_optimizer(config.optim)
    batch = {k: v[: config.batch_size] for k, v in _train_arrays(config, prep).items()}
    return DryRunParts(_init(config, prep, tx), loss_fn, tx, batch, what=f"{config.system} parser")


def train_system(config, prep, workdir: str, runtime: Runtime | None = None):
    """Trains on the run's mesh; resumes from ``workdir/ckpt``. Returns (state, decode).

    Args:
      runtime: the run's Runtime (default: a new one from ``config.mesh_shape``).
    """
    rt = runtime or Runtime(config)
    graphdef = build_graphdef(config, prep)
    loss_fn, decode = _loss_and_decode(config, prep, graphdef)
    tx = make_optimizer(config.optim)
    state = rt.create_state(_init(config, prep, tx))
    ckpt = (
        Checkpointer(os.path.join(workdir, "ckpt"), keep=config.keep_checkpoints)
        if config.ckpt_every
        else None
    )
    state, extra, resumed = rt.restore(ckpt, state)
    arrays = _train_arrays(config, prep)
    n, bsz = len(arrays["src"]), config.batch_size

    def collect(st, step):
        del st
        epoch, i = divmod(step * bsz, n)
        perm = np.random.default_rng(config.seed + epoch).permutation(n)
        idx = perm[(np.arange(bsz) + i) % n]
        return rt.put({k: v[idx] for k, v in arrays.items()}), {}

    writer = rt.writer(workdir, tensorboard=not config.tiny, console=True)
    state, _ = fit(
        state,
        collect,
        1,
        update_fn=rt.update_step(loss_fn, tx),
        num_steps=config.num_steps,
        writer=writer,
        ckpt=ckpt,
        resume=extra if resumed else None,
        ckpt_every=config.ckpt_every,
        log_every=config.log_every,
        desc=f"train {config.system}",
    )
    writer.close()
    return state, decode


def predict(config, prep, state, decode, examples) -> tuple[list[str], np.ndarray]:
    """Decodes ``examples`` in fixed-size batches; returns TOP strings and decoder steps."""
    vocab, tp, bsz = prep["vocab"], prep["tp"], config.eval_batch
    preds, steps = [], []
    for lo in range(0, len(examples), bsz):
        chunk = examples[lo : lo + bsz]
        pad = chunk + [chunk[-1]] * (bsz - len(chunk))  # static shapes: one compile
        src, mask = F.source(pad, vocab, config.model.max_src)
        out = jax.device_get(decode(state.params, state.frozen, src, mask))
        for i, ex in enumerate(chunk):
            toks = list(ex.tokens)
            try:
                if config.system == "treepiece":
                    preds.append(
                        F.units_to_top(out["units"][i], out["start"][i], out["end"][i], toks, tp)
                    )
                else:
                    preds.append(
                        F.actions_to_top([a for a in out["actions"][i] if a >= 0], toks, vocab)
                    )
            except ValueError as e:
                preds.append(f"<malformed: {e}>")
            steps.append(int(out["steps"][i]))
    return preds, np.array(steps)


def evaluate(config, prep, state, decode, split: str) -> dict[str, float]:
    exs = prep["splits"][split]
    preds, steps = predict(config, prep, state, decode, exs)
    well = 0
    for p in preds:
        try:
            parse_top(p)
            well += 1
        except TopParseError:
            pass
    em = np.mean([p == F.gold(ex) for p, ex in zip(preds, exs, strict=True)])
    return {
        f"{split}/exact_match": float(em),
        f"{split}/well_formed": well / len(preds),
        f"{split}/decoder_steps": float(steps.mean()),
    }


def serving_fns(state, decode, encode_only):
    """Decoder and encoder-only functions with the weights baked in as jit constants.

    This is how a served model runs: no per-call transfer or flattening of the parameter pytree,
    so the measured latency is the computation itself (the same treatment for every system).
    """
    p, fz = state.params, state.frozen
    return (
        jax.jit(lambda s, m: decode(p, fz, s, m)),
        jax.jit(lambda s, m: encode_only(p, fz, s, m)),
    )


def latency(config, prep, fn, batch: int, repeats: int, rounds: int = 1) -> float:
    """Seconds per utterance of ``fn(src, mask)`` at a batch size, after compile.

    Each of ``repeats`` distinct batches is timed ``rounds`` times and its fastest call is kept
    (robust to other processes preempting a shared CPU); the result averages over batches.
    """
    exs = prep["splits"]["test"]
    batches = []
    for r in range(repeats):
        chunk = [exs[(r * batch + i) % len(exs)] for i in range(batch)]
        batches.append(F.source(chunk, prep["vocab"], config.model.max_src))
    jax.block_until_ready(fn(*batches[0]))  # compile + warm up
    best = np.full(repeats, np.inf)
    for _ in range(rounds):
        for i, (src, mask) in enumerate(batches):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(src, mask))
            best[i] = min(best[i], time.perf_counter() - t0)
    return float(best.mean()) / batch


def run(config, workdir: str) -> dict[str, float]:
    """Trains ``config.system`` and reports exact match, steps and latency."""
    t0 = time.perf_counter()
    rt = Runtime(config)
    prep = prepare(config, workdir)
    state, decode = train_system(config, prep, workdir, runtime=rt)
    results = {"train_seconds": time.perf_counter() - t0, "units": float(len(prep["tp"].units))}
    for split in ("test", "compositional"):
        if split in prep["splits"]:
            results.update(evaluate(config, prep, state, decode, split))
    dec_fn, _ = serving_fns(state, decode, systems.encode_only(build_graphdef(config, prep)))
    for b in config.latency_batches:
        results[f"latency_ms/batch{b}"] = 1e3 * latency(
            config, prep, dec_fn, b, config.latency_repeats
        )
    writer = rt.writer(workdir, tensorboard=False, console=False)
    writer.write(config.num_steps, results)
    writer.close()
    return finish(
        workdir,
        results,
        metrics_path=writer.jsonl_path,
        plot_keys=["train/loss"],
        title=f"treepiece: {config.system}, mesh {tuple(rt.mesh.shape.values())}",
    )
