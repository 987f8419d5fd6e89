"""Experiment "fred": rank public prefinetuning corpora by private FreD, check by training.

Sec. 7.3 of ../shared/papers/fred.md (arXiv:2302.09042): a federated population (clients with
topic mixtures near a target mixture) and 7 generated public corpora (topic mixtures moving away
from the target, plus one with a shifted vocabulary). A small Transformer LM is pretrained on the
union of the public corpora and used as the embedder (mean-pooled final states, L2-normalised so
clipping at C = 1 is exact). For each epsilon, one DP estimate of the clients' mean/covariance
(sigma calibrated with dp_accounting, delta = 1/#clients) scores every candidate. Ground truth:
prefinetune a fresh LM on each candidate, FL-finetune with FedAvg (vmapped clients), record
next-word accuracy on the clients' test splits. Reports Spearman rho(FreD, accuracy) and whether
the top-ranked corpus is the best, per epsilon (averaged over noise draws).

Runs on the shared runtime: the mesh comes from `config.mesh_shape`; every central training
(the embedder, each prefinetuning) creates its state sharded and runs through `train.loop.fit`;
the FedAdam clients are split over the mesh by the vmap backend; the run ends with `finish`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
import tqdm
from flax import nnx

from fed import data, dp, fred, partition, simulation
from fed.oov import lm_examples, token_ce
from models.transformer import Transformer, TransformerConfig
from train.loop import fit
from train.optim import make_optimizer
from train.runtime import NullWriter, Runtime, finish
from train.state import TrainState


def _flatten(docs):
    return [s for doc in docs for s in doc]


def make_corpora(cfg):
    """(public candidates as lists of documents (sentence lists), names, client train/test)."""
    t = cfg.num_topics
    target = np.random.default_rng(cfg.seed).dirichlet([0.5] * t)
    other = np.roll(target, t // 2)
    clients_mix = np.random.default_rng([cfg.seed, 1]).dirichlet(
        target * cfg.client_concentration + 1e-3, cfg.num_clients
    )
    fed_corpus = data.generate_corpus(
        num_clients=cfg.num_clients,
        num_topics=t,
        topic_mix=clients_mix,
        sentences_per_client=(20, 60),
        seed=cfg.seed,
        sample_seed=0,
    )
    public, names = [], []
    lambdas = np.linspace(0.0, 1.0, cfg.num_candidates - 1)
    for j, lam in enumerate(lambdas):
        mix = (1 - lam) * target + lam * other
        c = data.generate_corpus(
            num_clients=cfg.docs_per_candidate,
            num_topics=t,
            topic_mix=np.tile(mix, (cfg.docs_per_candidate, 1)),
            sentences_per_client=(10, 10),
            private_frac=0.1,
            seed=cfg.seed,
            sample_seed=100 + j,
        )
        public.append(c.clients)
        names.append(f"mix{lam:.2f}")
    # a vocabulary shift: other words (another seed), the target's topic mixture
    c = data.generate_corpus(
        num_clients=cfg.docs_per_candidate,
        num_topics=t,
        topic_mix=np.tile(target, (cfg.docs_per_candidate, 1)),
        sentences_per_client=(10, 10),
        private_frac=0.1,
        seed=cfg.seed + 1,
        sample_seed=7,
    )
    public.append(c.clients)
    names.append("vocab_shift")
    splits = [data.split_by_time(s) for s in fed_corpus.clients]
    return public, names, splits


def _lm_loss(graphdef, rest):
    def loss_fn(params, frozen, batch, rng):
        del frozen, rng
        logits = nnx.merge(graphdef, params, rest)(batch["x"]).logits
        return (*token_ce(logits, batch["y"], batch["y"] > 0), {})

    return loss_fn


def make_train_central(graphdef, rest, optim_cfg, runtime: Runtime | None = None):
    """`train(params, examples, steps, batch_size, seed) -> params` on the run's mesh.

    The state is created sharded from `params` (copied: the caller keeps its own), batches are
    drawn with replacement by a generator seeded with `seed`, in step order, and nothing is
    logged or checkpointed (each call is a short stage of the experiment).
    """
    tx = make_optimizer(optim_cfg)
    loss_fn = _lm_loss(graphdef, rest)
    rt = runtime or Runtime({"mesh_shape": (-1, 1, 1)})
    compiled = {}  # one update step for every call (same state structure and shardings)

    def init(params, key):
        return TrainState.create(jax.tree.map(jnp.copy, params), tx, key)

    def train(params, examples, steps, batch_size, seed):
        state = rt.create_state(init, params, jax.random.key(seed))
        if "update" not in compiled:
            compiled["update"] = rt.update_step(loss_fn, tx)
        rng = np.random.default_rng(seed)

        def collect(st, step):
            del st, step  # called once per step, in order
            idx = rng.integers(0, len(examples["x"]), batch_size)
            return rt.put({k: v[idx] for k, v in examples.items()}), {}

        state, _ = fit(
            state,
            collect,
            1,
            update_fn=compiled["update"],
            num_steps=steps,
            writer=NullWriter(""),
            log_every=max(steps, 1),
            desc="central",
        )
        return state.params

    return train


def make_fl_accuracy(cfg, graphdef, rest, mesh=None):
    """`acc(params, train_ex, test_ex, seed)`: FedAdam fine-tuning, then test next-word accuracy.

    `mesh`: the vmap backend splits each cohort over it (None: one device).
    """

    def loss_fn(shared, personal, batch, mask_b):
        logits = nnx.merge(graphdef, shared, rest)(batch["x"]).logits
        return token_ce(logits, batch["y"], (batch["y"] > 0) & mask_b[:, None])

    work = simulation.make_sgd_client_work(loss_fn, cfg.client_lr, train_personal=False)
    alg = simulation.make_fed_avg(work, simulation.fed_adam_tx(cfg.server_lr), mesh=mesh)

    @jax.jit
    def correct(p, x, y):
        pred = jnp.argmax(nnx.merge(graphdef, p, rest)(x).logits, -1)
        real = (y > 0) & (y != 3)  # words only: </s> is excluded like in the OOV metrics
        return jnp.sum((pred == y) & real & (y != 1)), jnp.sum(real)

    def acc(params, train_ex, test_ex, seed):
        state = alg.init(params)
        for r in range(cfg.fl_rounds):
            rng = np.random.default_rng([seed, r])
            ids = partition.sample_clients(rng, len(train_ex), cfg.cohort)
            block = partition.make_block(
                [train_ex[i] for i in ids], batch_size=16, num_steps=cfg.local_steps, rng=rng
            )
            state, _, _ = alg.apply(state, block, {}, jax.random.key(r))
        hits, total = correct(state.shared, test_ex["x"], test_ex["y"])
        return float(hits) / max(float(total), 1.0)

    return acc


def dry_run_parts(config):
    """`--dry_run`: one central LM update (embedder pretraining, prefinetuning), batch 32."""
    from train.dry_run import DryRunParts

    cfg = config.fred
    public_docs, _, _ = make_corpora(cfg)
    public = [_flatten(docs) for docs in public_docs]
    vocab = data.build_vocab(public[:-1], cfg.vocab_size, 1)
    mcfg = TransformerConfig.from_config(config.model, vocab_size=len(vocab))
    tx = make_optimizer(config.optim)

    def init():
        _, params, rest = nnx.split(Transformer(mcfg, rngs=nnx.Rngs(config.seed)), nnx.Param, ...)
        return TrainState.create(params, tx, jax.random.key(0), frozen=rest)

    graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(mcfg, rngs=nnx.Rngs(0))))[0]

    def loss_fn(params, frozen, batch, rng):
        del rng
        logits = nnx.merge(graphdef, params, frozen)(batch["x"]).logits
        return (*token_ce(logits, batch["y"], batch["y"] > 0), {})

    x = np.zeros((32, cfg.max_len), np.int32)
    return DryRunParts(init, loss_fn, tx, {"x": x, "y": x}, what="central LM update (batch 32)")


def embed_all(config, runtime: Runtime | None = None) -> dict:
    """Corpora, the pretrained embedder and every embedding FreD needs (shared with bench.fred).

    Returns:
      dict with names, public (flat sentence lists), splits, w2i, graphdef, rest, init_params,
      cand (user-weighted moments per candidate, over its documents) and client_embs
      (one `[n_u, d]` array of L2-normalised embeddings per client's training split).
    """
    cfg = config.fred
    public_docs, names, splits = make_corpora(cfg)
    public = [_flatten(docs) for docs in public_docs]
    vocab = data.build_vocab([public_c for public_c in public[:-1]], cfg.vocab_size, 1)
    w2i = {w: i for i, w in enumerate(vocab)}
    mcfg = TransformerConfig.from_config(config.model, vocab_size=len(vocab))
    model = Transformer(mcfg, rngs=nnx.Rngs(config.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    # the embedder: pretrain on the union of public corpora (server-side data)
    union = lm_examples([s for p in public for s in p], w2i, cfg.max_len)
    train_central = make_train_central(graphdef, rest, config.optim, runtime or Runtime(config))
    trained = train_central(params, union, cfg.pretrain_steps, 32, 0)
    embed = fred.make_embed_fn(nnx.merge(graphdef, trained, rest))

    def embed_groups(groups, chunk=256):
        """One `[n_g, d]` array per group; fixed-size calls, so one compile."""
        x = lm_examples(_flatten(groups), w2i, cfg.max_len)["x"]
        n = len(x)
        x = np.pad(x, [(0, -n % chunk), (0, 0)])
        e = np.concatenate(
            [
                np.asarray(embed(jnp.asarray(c), jnp.asarray(c > 0)))
                for c in np.split(x, len(x) // chunk)
            ]
        )[:n].astype(np.float64)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        return np.split(e, np.cumsum([len(g) for g in groups])[:-1])

    return {
        "names": names,
        "public": public,
        "splits": splits,
        "w2i": w2i,
        "graphdef": graphdef,
        "rest": rest,
        "init_params": params,
        "cand": [fred.grouped_moments(embed_groups(docs), 1.0) for docs in public_docs],
        "client_embs": embed_groups([tr for tr, _ in splits]),
    }


def run(config, workdir: str) -> dict[str, float]:
    cfg = config.fred
    rt = Runtime(config)
    e = embed_all(config, rt)
    names, public, splits, w2i = e["names"], e["public"], e["splits"], e["w2i"]
    cand, client_embs = e["cand"], e["client_embs"]
    train_central = make_train_central(e["graphdef"], e["rest"], config.optim, rt)
    fl_accuracy = make_fl_accuracy(cfg, e["graphdef"], e["rest"], rt.mesh)
    init_params = e["init_params"]
    writer = rt.writer(workdir)

    # 2. private FreD at several epsilon; one estimate per (epsilon, draw) for all candidates
    delta = 1.0 / len(splits)
    scores = {}
    for eps in cfg.epsilons:
        sigma = 0.0 if eps == math.inf else dp.calibrate_sigma(eps, delta)
        draws = 1 if sigma == 0.0 else cfg.noise_draws
        scores[eps] = []
        for d in range(draws):
            mu, cov, _ = fred.private_client_moments(
                client_embs,
                clip=1.0,
                sigma_mean=sigma,
                sigma_cov=sigma,
                rng=jax.random.key(1000 * d + 7),
            )
            scores[eps].append(fred.rank_candidates(cand, mu, cov)[0])

    # 3. ground truth: prefinetune on each candidate, FedAvg-finetune, accuracy on clients
    train_ex = [lm_examples(tr, w2i, cfg.max_len) for tr, _ in splits]
    test_all = lm_examples([s for _, te in splits for s in te], w2i, cfg.max_len)
    acc = []
    for j, p in enumerate(tqdm.tqdm(public, desc="prefinetune+FL", disable=config.tiny)):
        examples = lm_examples(p, w2i, cfg.max_len)
        # the ground-truth LM starts from its random init (not the embedder), so what it knows
        # comes from the candidate corpus; the embedder only scores
        pf = train_central(init_params, examples, cfg.prefinetune_steps, 32, 1 + j)
        acc.append(fl_accuracy(pf, train_ex, test_all, config.seed))
        writer.write(j, {"fred/accuracy": acc[-1], "fred/fd_nonprivate": scores[math.inf][0][j]})
    acc = np.asarray(acc)

    results, lines = {}, []
    lines.append("| epsilon | sigma | Spearman rho(FreD, acc) | top-1 hit | ranking (best first) |")
    lines.append("|---|---|---|---|---|")
    for eps, runs in scores.items():
        # a constant accuracy (e.g. the 2-step tiny run) has no rank correlation: report nan
        rhos = [scipy.stats.spearmanr(s, acc)[0] if np.ptp(acc) > 0 else np.nan for s in runs]
        hits = [float(np.argmin(s) == np.argmax(acc)) if np.ptp(acc) > 0 else np.nan for s in runs]
        sigma = 0.0 if eps == math.inf else dp.calibrate_sigma(eps, delta)
        order = " > ".join(names[i] for i in np.argsort(runs[0]))
        lines.append(
            f"| {eps} | {sigma:.3g} | {np.mean(rhos):.3f} | {np.mean(hits):.2f} | {order} |"
        )
        results[f"eps{eps}/spearman"] = float(np.mean(rhos))
        results[f"eps{eps}/top1_hit"] = float(np.mean(hits))
    truth = " > ".join(f"{names[i]} ({acc[i]:.4f})" for i in np.argsort(-acc))
    writer.close()
    print("\n".join(lines))
    print(f"ground truth (FL accuracy, best first): {truth}")
    return finish(
        workdir,
        results,
        metrics_path=writer.jsonl_path,
        plot_keys=["fred/accuracy", "fred/fd_nonprivate"],
        title=f"fred: {len(names)} candidates, mesh {tuple(rt.mesh.shape.values())}",
    )
