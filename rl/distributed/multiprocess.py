"""LlamaRL in two processes: one program, process 0 the trainer, process 1 the generator.

LlamaRL (arXiv:2505.24034; spec `llamarl.md` §1, §6.3, §6.4, §9.2). Every process runs this same
program (`python -m rl.distributed.multiprocess --config=... --process_id=i --port=P`); after
`jax.distributed.initialize` (gloo CPU collectives, 127.0.0.1) each finds its role from
`jax.process_index()`: process 0 builds the trainer executor on its own devices, process 1 the
generator executor on its own. Between them:

- trajectories (`Rollout`: tokens, μ, rewards, version, generator id) go from the generator to the
  trainer over a localhost socket (pickled host arrays), interleaved with heartbeats;
- weights go back with the cross-process two-hop `sync_trainer_to_generator` (re-layout on the
  trainer's mesh, then a same-layout cross-process `device_put`, a norm checksum per bucket);
  it is a collective, so before each version both sides shake hands over the socket ("sync v" /
  "ready v") and only then enter it: a dead peer is seen on the socket, not inside a transfer.

The schedule is the single-process controller's deterministic one: rollout `b` is sampled with
exactly version `max(b - k, 0)` (k = `llamarl.max_staleness`), so k = 0 is the synchronous loop
and k = 1 overlaps the generation of rollout b+1 with the update on rollout b. The trainer
detects a dead or silent generator (socket closed, or no message for `heartbeat_s`) and raises
`PeerDead` naming the role and its last heartbeat; the generator gives up on a silent trainer
after `timeout_s`.

Warm start: the trainer loads `rl.sft_dir/policy.npz` when it exists (written by the single-
process runner after its SFT stage); otherwise the policy starts from its seeded initialisation
(a functional run). Not in this mode: checkpoints and resume (the single-process runner has them).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from multiprocessing.connection import Connection

import numpy as np

from rl.distributed.channels import ChannelTimeout, Heartbeat, PeerDead, StalenessGate
from train.host_memory import retain_freed_memory

AUTHKEY_HELLO = b"lmrl-llamarl"


def init_distributed(
    process_id: int, port: int, *, num_processes: int = 2, devices_per_process: int = 2
):
    """jax.distributed on 127.0.0.1: gloo collectives, CPU devices, cross-host transfers."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_num_cpu_devices", devices_per_process)
    jax.config.update(
        "jax_cross_host_transfer_socket_address", f"127.0.0.1:{port + 1 + process_id}"
    )
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=120,
        heartbeat_timeout_seconds=30,
    )


class _Link:
    """A pickled-message socket between the two roles with timeouts (one per process)."""

    def __init__(self, conn: Connection):
        self.conn = conn

    @classmethod
    def serve(cls, port: int, timeout_s: float) -> _Link:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))
        srv.listen(1)
        srv.settimeout(timeout_s)
        try:
            sock, _ = srv.accept()
        except TimeoutError:
            raise PeerDead(
                f"generator (process 1) never connected within {timeout_s:.0f} s"
            ) from None
        finally:
            srv.close()
        sock.settimeout(None)
        link = cls(Connection(sock.detach()))
        if link.conn.recv() != AUTHKEY_HELLO:
            raise RuntimeError("unexpected peer on the llamarl trajectory port")
        return link

    @classmethod
    def connect(cls, port: int, timeout_s: float) -> _Link:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ChannelTimeout(
                        f"trainer (process 0) not listening on port {port}"
                    ) from None
                time.sleep(0.2)
        sock.settimeout(None)
        link = cls(Connection(sock.detach()))
        link.conn.send(AUTHKEY_HELLO)
        return link

    def send(self, *msg) -> None:
        self.conn.send(msg)

    def recv(self, timeout: float):
        """The next message, or None after `timeout` s; EOFError if the peer is gone."""
        if not self.conn.poll(timeout):
            return None
        return self.conn.recv()


def _build(config):
    """(task, tokenizer, graphdef, host params, rest, objective, tx) the same in every process."""
    import jax
    from flax import nnx  # noqa: F401  (nnx modules in the graphdef)

    from rl import objectives
    from rl.run_ar import RUNNER_FIELDS, rl_optimizer
    from train.lm import build_transformer
    from train.sft import make_task_and_tokenizer
    from train.state import split_module

    task, tokenizer = make_task_and_tokenizer(config)
    max_len = max(config.model.max_len, config.sft.max_len)
    local = jax.local_devices()[0]
    with jax.default_device(local):
        model = build_transformer(
            config.model, tokenizer.vocab_size, config.seed, causal=True, max_len=max_len
        )
        graphdef, params, rest = split_module(model)
    params = jax.device_get(params)
    rest = jax.device_get(rest)
    objective = objectives.build(config.rl, graphdef, runner_fields=RUNNER_FIELDS)
    return task, tokenizer, graphdef, params, rest, objective, rl_optimizer(config)


def _warm_start(config, params):
    """`rl.sft_dir/policy.npz` (the single-process runner's SFT export) when it exists."""
    import jax

    path = os.path.join(config.rl.sft_dir, "policy.npz") if config.rl.sft_dir else ""
    if not path or not os.path.exists(path):
        return params, "seeded init (no rl.sft_dir/policy.npz)"
    with np.load(path) as f:
        leaves = [f[f"leaf_{i}"] for i in range(len(f.files))]
    treedef = jax.tree.structure(params)
    if treedef.num_leaves != len(leaves):
        raise ValueError(f"{path} has {len(leaves)} leaves; the policy has {treedef.num_leaves}")
    return jax.tree.unflatten(treedef, leaves), f"SFT warm start {path}"


def _role_meshes(config):
    import jax

    from models.sharding import make_mesh

    lc = config.llamarl
    devs = jax.devices()
    t_dev = [d for d in devs if d.process_index == 0]
    g_dev = [d for d in devs if d.process_index == 1]
    return (
        t_dev,
        g_dev,
        make_mesh(tuple(lc.trainer_mesh), t_dev),
        make_mesh(tuple(lc.generator_mesh), g_dev),
    )


def _phantoms(abstract, shardings):
    """Global arrays with the trainer's shardings and no local shards (the generator's view of
    the source of a cross-process sync)."""
    import jax

    return jax.tree.map(
        lambda a, s: jax.make_array_from_callback(
            # Never read for shards on the other process (a fully replicated sharding still
            # asks once): a zero-stride view, nothing allocated.
            a.shape,
            s,
            lambda i, a=a: np.broadcast_to(np.zeros((), a.dtype), a.shape)[i],
            dtype=a.dtype,
        ),
        abstract,
        shardings,
    )


def run_trainer(config, workdir: str, port: int) -> dict:
    """Process 0: the trainer executor, the staleness gate, the heartbeat check, the metrics."""
    import jax

    from models.sharding import state_shardings
    from rl import objectives
    from rl.distributed.executors import TrainerExecutor
    from rl.distributed.weight_sync import sync_trainer_to_generator
    from train.metrics import MetricWriter

    rc, lc = config.rl, config.llamarl
    k = int(lc.max_staleness)
    hb_s = float(lc.get("heartbeat_s", 0) or lc.timeout_s)
    _, _, graphdef, params, rest, objective, tx = _build(config)
    params, warm = _warm_start(config, params)
    t_dev, _, _, gmesh = _role_meshes(config)
    trainer = TrainerExecutor(lc.trainer_mesh, t_dev, objective.loss_fn, tx)
    frozen = objectives.initial_frozen(objective, params, {})
    rl_seed = config.seed if rc.get("seed", -1) < 0 else rc.seed
    trainer.init_state(params, rest, jax.random.key(rl_seed + 5), frozen or None)
    dst = state_shardings(params, gmesh)
    link = _Link.serve(port + 3, lc.timeout_s)
    specs = jax.tree.map(lambda x: x.sharding.spec, trainer.policy_params())
    link.send("specs", specs)
    hb = Heartbeat("generator (process 1)", hb_s)
    gate, inbox = StalenessGate(k), {}
    writer = MetricWriter(workdir)
    sync_kw = dict(bucket_bytes=int(lc.bucket_mb * (1 << 20)), checksum=lc.checksum)
    history, reports = [], []

    def pump(until, what: str):
        """Receives messages until `until()` holds; heartbeats and rollouts on the way."""
        while not until():
            try:
                msg = link.recv(min(hb.timeout_s / 4, 1.0))
            except (EOFError, OSError) as e:
                raise PeerDead(
                    f"generator (process 1) is dead (connection lost: {e!r}) while the trainer "
                    f"was {what}; {hb.describe()}"
                ) from None
            if msg is None:
                hb.check()
                continue
            hb.beat(msg[1] if msg[0] == "hb" else f"{msg[0]} {getattr(msg[1], 'seq', msg[1])}")
            if msg[0] == "rollout":
                inbox[msg[1].seq] = msg[1]
            elif msg[0] == "ready":
                inbox[("ready", msg[1])] = True
            elif msg[0] == "bye":
                inbox["bye"] = True
            elif msg[0] == "error":
                raise RuntimeError(f"generator (process 1) failed: {msg[1]}")

    def publish(v: int):
        link.send("sync", v)
        pump(lambda: ("ready", v) in inbox, f"waiting to sync v{v}")
        del inbox[("ready", v)]
        _, rep = sync_trainer_to_generator(trainer.policy_params(), dst, version=v, **sync_kw)
        reports.append(rep)
        return rep

    t_start = time.perf_counter()
    publish(trainer.version)
    last = time.perf_counter()
    for step in range(rc.steps):
        t_wait = time.perf_counter()
        pump(lambda s=step: s in inbox, f"waiting for rollout {step}")
        idle = time.perf_counter() - t_wait
        ro = inbox.pop(step)
        if not gate.admit(trainer.version, ro.policy_version):
            raise RuntimeError(f"rollout {step} v{ro.policy_version} over-stale (k={k})")
        t0 = time.perf_counter()
        m = {
            a: float(np.asarray(b)) for a, b in jax.device_get(trainer.train_step(ro.batch)).items()
        }
        m["time/train"] = time.perf_counter() - t0
        if step + 1 < rc.steps:
            rep = publish(trainer.version)
            m.update(rep.metrics())
        now = time.perf_counter()
        m.update(ro.stats)
        m.update(
            {
                "time/step": now - last,
                "time/trainer_idle": idle,
                "staleness/lag": float(trainer.version - 1 - ro.policy_version),
                "llamarl/seq": float(ro.seq),
                "llamarl/behaviour_version": float(ro.policy_version),
            }
        )
        last = now
        history.append(m)
        writer.write(trainer.version, m)
    link.send("stop", trainer.version)
    # Process 0 hosts the coordination service: leave only after the generator has finished.
    pump(lambda: "bye" in inbox, "waiting for the generator to finish")
    writer.close()
    wall = time.perf_counter() - t_start
    return {
        "role": "trainer",
        "warm_start": warm,
        "steps": len(history),
        "max_staleness": k,
        "loss": [h["train/loss"] for h in history],
        "reward": [h.get("rl/reward_mean", float("nan")) for h in history],
        "lag": [h["staleness/lag"] for h in history],
        "seq": [h["llamarl/seq"] for h in history],
        "is_mean": [h.get("aipo/is_mean", float("nan")) for h in history],
        "two_hop_leaves": [r.two_hop_leaves for r in reports],
        "ws_seconds": [r.seconds for r in reports],
        "step_times": [h["time/step"] for h in history],
        "wall_s": wall,
        "heartbeats": hb.beats,
    }


def run_generator(config, port: int) -> dict:
    """Process 1: the generator executor; samples, scores and ships rollouts; joins every sync."""
    import jax
    from jax.sharding import NamedSharding

    from models.sharding import state_shardings
    from rl.distributed.executors import GeneratorExecutor
    from rl.distributed.weight_sync import sync_trainer_to_generator

    rc, lc = config.rl, config.llamarl
    k = int(lc.max_staleness)
    task, tokenizer, graphdef, params, rest, _, _ = _build(config)
    _, g_dev, tmesh, gmesh = _role_meshes(config)
    gen = GeneratorExecutor.from_config(
        config, g_dev, graphdef, rest, task, tokenizer, generator_id=1
    )
    link = _Link.connect(port + 3, lc.timeout_s)
    msg = link.recv(lc.timeout_s)
    if msg is None or msg[0] != "specs":
        raise ChannelTimeout(f"trainer (process 0) sent no shardings within {lc.timeout_s} s")
    src_s = jax.tree.map(lambda s: NamedSharding(tmesh, s), msg[1])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    dst = state_shardings(params, gmesh)
    sync_kw = dict(bucket_bytes=int(lc.bucket_mb * (1 << 20)), checksum=lc.checksum)
    sets: dict[int, object] = {}
    have = -1

    def join_sync(v: int):
        t0 = time.monotonic()
        while True:
            msg = link.recv(1.0)
            if msg is not None:
                break
            link.send("hb", f"waiting for sync v{v}")
            if time.monotonic() - t0 > lc.timeout_s:
                raise ChannelTimeout(f"trainer (process 0) silent for {lc.timeout_s} s (sync v{v})")
        if msg != ("sync", v):
            raise RuntimeError(f"expected ('sync', {v}) from the trainer, got {msg!r}")
        link.send("ready", v)
        sets[v], _ = sync_trainer_to_generator(
            _phantoms(abstract, src_s), dst, version=v, **sync_kw
        )
        for old in [u for u in sets if u < v - k]:
            del sets[old]

    sent = 0
    for seq in range(rc.steps):
        need = max(seq - k, 0)
        while have < need:
            have += 1
            join_sync(have)
        ro = gen.rollout(sets[need], seq, need)
        link.send("rollout", ro)
        sent += 1
    while have < rc.steps - 1:
        have += 1
        join_sync(have)
    msg = link.recv(lc.timeout_s)
    link.send("bye", sent)
    return {"role": "generator", "sent": sent, "versions": have + 1, "stop": list(msg or [])}


def main(argv=None):
    """`--config=... --workdir=... --process_id=i --port=P [--devices_per_process=2]`."""
    from absl import app, flags
    from ml_collections import config_flags

    cfg = config_flags.DEFINE_config_file("config", None, "configs/llamarl.py[:variant]")
    wd = flags.DEFINE_string("workdir", "", "process 0 writes metrics.jsonl and result.json here")
    pid = flags.DEFINE_integer("process_id", 0, "0 = trainer, 1 = generator")
    port = flags.DEFINE_integer("port", 0, "coordinator port; +1,+2 transfers, +3 trajectories")
    ndev = flags.DEFINE_integer("devices_per_process", 2, "CPU devices per process")

    def _main(_):
        os.environ.setdefault("LMRL_NO_PROGRESS", "1")
        retain_freed_memory()  # before JAX starts its threads, as launch/main.py does
        init_distributed(pid.value, port.value, devices_per_process=ndev.value)
        import jax

        config = cfg.value
        try:
            if jax.process_index() == 0:
                os.makedirs(wd.value, exist_ok=True)
                res = run_trainer(config, wd.value, port.value)
                with open(os.path.join(wd.value, "result.json"), "w") as f:
                    json.dump(res, f)
            else:
                res = run_generator(config, port.value)
            print("LLAMARL_MP " + json.dumps(res), flush=True)
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)  # never wait on the coordination service for a failed peer
        sys.stdout.flush()
        os._exit(0)

    app.run(_main, argv=argv)


if __name__ == "__main__":
    main()
