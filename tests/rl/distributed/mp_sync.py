"""One process of the 2-process localhost weight-sync check (see test_weight_sync.py).

Process 0 holds the trainer mesh (its 2 CPU devices, fsdp), process 1 the generator mesh (its 2
devices, tensor parallel); both run the same program (gloo collectives, cross-host transfers over
127.0.0.1) and `sync_trainer_to_generator` moves the tree with the two-hop recipe and the
cross-process checksum. Prints one JSON line.
"""

import json
import os
import sys

pid, port = int(sys.argv[1]), int(sys.argv[2])
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

# Each process compiles its own programs (seconds); the shared persistent cache is not needed.
jax.config.update("jax_enable_compilation_cache", False)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_cross_host_transfer_socket_address", f"127.0.0.1:{port + 1 + pid}")
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}",
    num_processes=2,
    process_id=pid,
    initialization_timeout=60,
)

import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from models.sharding import make_mesh  # noqa: E402
from rl.distributed.weight_sync import sync_trainer_to_generator  # noqa: E402

devices = jax.devices()
tmesh = make_mesh((1, 2, 1), [d for d in devices if d.process_index == 0])
gmesh = make_mesh((1, 1, 2), [d for d in devices if d.process_index == 1])
rng = np.random.default_rng(0)
host = {
    "w": rng.standard_normal((64, 32)).astype(np.float32),
    "b": rng.standard_normal((32,)).astype(np.float32),
}
src_s = {"w": NamedSharding(tmesh, P("fsdp", None)), "b": NamedSharding(tmesh, P())}
dst_s = {"w": NamedSharding(gmesh, P(None, "tensor")), "b": NamedSharding(gmesh, P())}
src = {
    k: jax.make_array_from_callback(v.shape, src_s[k], lambda i, v=v: v[i], dtype=v.dtype)
    for k, v in host.items()
}
out, rep = sync_trainer_to_generator(src, dst_s, version=1, bucket_bytes=4096)
res = {"pid": pid, "two_hop": rep.two_hop_leaves, "checksums": rep.checksums}
res["local_shards"] = sum(len(out[k].addressable_shards) for k in host)
res["bitwise"] = all(
    np.array_equal(np.asarray(s.data), host[k][s.index])
    for k in host
    for s in out[k].addressable_shards
)
print(json.dumps(res), flush=True)
