"""Experiment "fed_oov": FedAvg training of a char-aware word LM, then per-client OOV expansion.

Protocol of ../shared/papers/oov.md (arXiv:2305.03584), Sec. 6: the central model is trained with
FedAdam/FedAvg over sampled clients (OOV words -> <unk>); then each evaluation client personalises
on its training split and is scored on its later test split with four methods: no
personalisation, local fine-tuning of the whole model, OOV expansion with random adapter init and
OOV expansion with char-encoder init (the method). Resumable (server state in workdir/ckpt).

Runs on the shared runtime: the mesh comes from `config.mesh_shape` and the vmap backend splits
each cohort (and each personalisation block) over it; the rounds run through `train.loop.fit`
(one collected block, one server update per loop step) and the run ends with `finish`.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from flax import nnx

from fed import data, dp, oov, partition, simulation
from models.word_lm import WordLM, WordLMConfig
from train.checkpoint import Checkpointer
from train.loop import fit
from train.runtime import Runtime, finish

METHODS = ("none", "local_ft", "oov_random", "oov_char")


def _corpus(cfg):
    if cfg.data_dir:
        return data.load_jsonl_clients(cfg.data_dir)
    return data.generate_corpus(num_clients=cfg.num_clients, seed=cfg.data_seed)


def _pad_examples(ex: dict, n: int) -> dict:
    return {k: np.pad(v, [(0, n - len(v))] + [(0, 0)] * (v.ndim - 1)) for k, v in ex.items()}


def personalise(method, cfg, model, graphdef, params, rest, train_s, test_s, w2i, rng, mesh=None):
    """Personalises every evaluation client with `method`; returns summed EMR counts.

    `mesh`: the vmap backend splits each block of clients over it (None: one device).
    """
    p = cfg.pers
    adapter = method.startswith("oov")
    train_shared = method == "local_ft" or (adapter and p.expand_train == "all")
    lr = 0.0 if method == "none" else p.lr
    work = oov.make_personalise_work(
        graphdef, rest, adapter=adapter, lr=lr, train_shared=train_shared, adapter_lr=p.adapter_lr
    )
    runner = simulation.make_vmap_runner(work, mesh=mesh)
    vocab = set(w2i)
    n_train = max(len(s) for s in train_s)
    n_test = max(len(s) for s in test_s)
    # no personalisation: one fully-masked step (a no-op), then the evaluation
    epochs = 0 if method == "none" else p.epochs
    steps = max(1, math.ceil(n_train * epochs / p.batch_size))
    totals, added = None, []
    for start in range(0, len(train_s), p.block_size):
        ids = range(start, min(start + p.block_size, len(train_s)))
        arrays, tests, personal = [], [], []
        for u in ids:
            pv = oov.personal_vocab(train_s[u], vocab, p.k_max, p.min_count) if adapter else []
            ids_u = oov.expanded_ids(w2i, pv)
            ex = oov.lm_examples(train_s[u], ids_u, cfg.fed.max_len)
            test = _pad_examples(oov.lm_examples(test_s[u], ids_u, cfg.fed.max_len), n_test)
            if adapter:
                ad, valid = oov.init_adapter(
                    model, pv, p.k_max, method.split("_")[1], jax.random.fold_in(rng, u)
                )
                ex["valid"] = np.broadcast_to(valid, (len(ex["x"]), p.k_max))
                test["valid"] = valid
                personal.append(ad)
                # stored per client: |V_u| rows + biases, and the personal vocabulary biases
                own = (len(pv) * (ad["emb"].shape[1] + 1) + ad["bias_v"].size) * 4
                added.append(own + (oov.param_bytes(params) if train_shared else 0))
            else:
                personal.append({})
                added.append(oov.param_bytes(params) if method == "local_ft" else 0)
            arrays.append(ex)
            tests.append(test)
        block = partition.make_block(
            arrays,
            batch_size=p.batch_size,
            num_steps=steps,
            block_size=p.block_size,
            rng=np.random.default_rng([cfg.seed, start]),
            extra=tests,
            epochs=max(epochs, 1),
        )
        if method == "none":
            block = block._replace(mask_csb=np.zeros_like(block.mask_csb))
        personal_c = jax.tree.map(
            lambda *x: jnp.stack(x), *(personal + personal[:1] * (p.block_size - len(personal)))
        )
        rngs = jax.random.split(rng, p.block_size)
        # padded clients reuse client 0's test split: drop their counts by masking them out
        real = np.arange(p.block_size) < len(arrays)
        block = block._replace(
            extra={**block.extra, "y": np.where(real[:, None, None], block.extra["y"], 0)}
        )
        _, _, _, counts = runner(params, personal_c, block, rngs)
        counts = jax.tree.map(np.asarray, counts)
        totals = counts if totals is None else jax.tree.map(np.add, totals, counts)
    tok = max(float(totals["tokens"]), 1.0)
    return {
        "top1": float(totals["top1"]) / tok,
        "top3": float(totals["top3"]) / tok,
        "oov_rate": float(totals["oov"]) / tok,
        "bytes_per_client": float(np.mean(added)),
    }


def dry_run_parts(config):
    """`--dry_run`: the cohort's local step as one SGD update on `cohort x batch_size` rows.

    The vmap backend trains each client on its own copy of the shared parameters; this plans
    the same arithmetic as one batch (the per-client parameter copies are not included).
    """
    import jax.numpy as jnp
    import optax

    from train.dry_run import DryRunParts
    from train.state import TrainState

    cfg = config
    corpus = _corpus(cfg.fed)
    train_s = [data.split_by_time(s, cfg.fed.train_frac)[0] for s in corpus.clients]
    vocab = data.build_vocab(train_s, cfg.fed.vocab_size, cfg.fed.vocab_min_clients)
    mcfg = WordLMConfig(vocab_size=len(vocab), **cfg.model.to_dict())
    chars = data.chars_of(vocab, mcfg.max_chars)

    def build():
        return WordLM(mcfg, chars, rngs=nnx.Rngs(cfg.seed))

    graphdef = nnx.split(nnx.eval_shape(build), nnx.Param, ...)[0]
    tx = optax.sgd(cfg.fed.client_lr)

    def init():
        _, params, rest = nnx.split(build(), nnx.Param, ...)
        return TrainState.create(params, tx, jax.random.key(cfg.seed), frozen=rest)

    def loss_fn(params, frozen, batch, rng):
        del rng
        client_loss = oov.make_loss_fn(graphdef, frozen, adapter=False)
        mask_b = jnp.ones(batch["x"].shape[:1], bool)
        return (*client_loss(params, {}, batch, mask_b), {})

    x = np.zeros((cfg.fed.cohort * cfg.fed.batch_size, cfg.fed.max_len), np.int32)
    what = f"local SGD step of a cohort of {cfg.fed.cohort} clients as one batch"
    return DryRunParts(init, loss_fn, tx, {"x": x, "y": x}, what=what)


def run(config, workdir: str) -> dict[str, float]:
    cfg = config
    corpus = _corpus(cfg.fed)
    splits = [data.split_by_time(s, cfg.fed.train_frac) for s in corpus.clients]
    train_s = [tr for tr, _ in splits]
    test_s = [te for _, te in splits]
    vocab = data.build_vocab(train_s, cfg.fed.vocab_size, cfg.fed.vocab_min_clients)
    w2i = {w: i for i, w in enumerate(vocab)}
    mcfg = WordLMConfig(vocab_size=len(vocab), **cfg.model.to_dict())
    model = WordLM(mcfg, data.chars_of(vocab, mcfg.max_chars), rngs=nnx.Rngs(cfg.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    train_ex = [oov.lm_examples(s, w2i, cfg.fed.max_len) for s in train_s]
    steps = max(1, math.ceil(max(len(e["x"]) for e in train_ex) / cfg.fed.batch_size))

    share = cfg.fed.share_char_encoder
    loss_fn = oov.make_loss_fn(graphdef, rest, adapter=False, share_char_encoder=share)
    work = simulation.make_sgd_client_work(loss_fn, cfg.fed.client_lr, train_personal=False)
    dp_clip = cfg.fed.dp_clip if cfg.fed.dp_clip > 0 else None
    rt = Runtime(cfg)
    alg = simulation.make_fed_avg(
        work,
        oov.server_tx(cfg.fed.server_opt, cfg.fed.server_lr),
        backend=cfg.fed.backend,
        dp_clip=dp_clip,
        dp_noise_multiplier=cfg.fed.dp_noise_multiplier,
        mesh=rt.mesh,
        lift=oov.make_table_lift(graphdef, rest) if share else None,
    )
    state = alg.init(params)
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"), keep=cfg.keep_checkpoints)
    state, extra, resumed = rt.restore(ckpt, state)
    writer = rt.writer(workdir)
    key = jax.random.key(cfg.seed)

    def collect(st, r):
        # sampling and shuffling depend only on (seed, round): a resumed run repeats them
        del st
        ids = partition.sample_clients(
            np.random.default_rng([cfg.seed, r]), len(train_ex), cfg.fed.cohort
        )
        block = partition.make_block(
            [train_ex[i] for i in ids],
            batch_size=cfg.fed.batch_size,
            num_steps=steps,
            rng=np.random.default_rng([cfg.seed, r, 1]),
        )
        return block, {}

    def server_round(st, block):
        # the round's key comes from the server state's round counter (= the loop step)
        st, _, m = alg.apply(st, block, {}, jax.random.fold_in(key, st.round))
        return st, {"train/loss": m["loss_sum"] / max(float(m["denom"]), 1.0)}

    state, _ = fit(
        state,
        collect,
        1,
        update_fn=server_round,
        num_steps=cfg.fed.rounds,
        writer=writer,
        ckpt=ckpt,
        resume=extra if resumed else None,
        ckpt_every=cfg.ckpt_every,
        log_every=cfg.log_every,
        desc="fedavg",
    )
    ckpt.close()

    if dp_clip is not None and cfg.fed.dp_noise_multiplier > 0:
        # user-level DP-FedAvg: Poisson-sampled Gaussian composed over rounds (approximating the
        # fixed-size cohort by sampling rate cohort / #clients, as is standard)
        event = dp.gaussian_event(
            cfg.fed.dp_noise_multiplier,
            steps=cfg.fed.rounds,
            sampling_rate=cfg.fed.cohort / len(train_ex),
        )
        eps = dp.epsilon(event, 1.0 / len(train_ex), "rdp")
        writer.write(cfg.fed.rounds, {"dp/epsilon": eps})
    model = nnx.merge(graphdef, state.shared, rest)
    n_eval = min(cfg.pers.num_eval_clients, len(train_s))
    results = {}
    methods = [m for m in METHODS if m in cfg.pers.methods.split("+")]
    for method in tqdm.tqdm(methods, desc="personalise", disable=cfg.tiny):
        res = personalise(
            method,
            cfg,
            model,
            graphdef,
            state.shared,
            rest,
            train_s[:n_eval],
            test_s[:n_eval],
            w2i,
            jax.random.fold_in(key, 10**6 + METHODS.index(method)),
            mesh=rt.mesh,
        )
        results[method] = res
        writer.write(cfg.fed.rounds, {f"{method}/{k}": v for k, v in res.items()})
    writer.close()
    print(format_table(results))
    return finish(
        workdir,
        {f"{m}/{k}": v for m, r in results.items() for k, v in r.items()},
        metrics_path=writer.jsonl_path,
        plot_keys=["train/loss"],
        title=f"fed_oov: {cfg.fed.rounds} rounds, mesh {tuple(rt.mesh.shape.values())}",
        lines=[("checkpoint", os.path.join(workdir, "ckpt"))],
    )


def format_table(results: dict) -> str:
    lines = [
        "| method | top-1 EMR | top-3 EMR | OOV rate | added bytes/client |",
        "|---|---|---|---|---|",
    ]
    for m, r in results.items():
        lines.append(
            f"| {m} | {r['top1']:.4f} | {r['top3']:.4f} | {r['oov_rate']:.4f} | "
            f"{r['bytes_per_client']:.0f} |"
        )
    return "\n".join(lines)
