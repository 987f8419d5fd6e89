"""Networks and sharding rules. Never imports train/, rl/, fed/, parsing/, peft/ or launch/."""

import flax

# Parameters carry logical axis names as metadata only; models/sharding.py maps them to the mesh.
flax.config.update("flax_always_shard_variable", False)
