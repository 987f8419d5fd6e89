"""Asynchronous distributed RL (LlamaRL)."""
