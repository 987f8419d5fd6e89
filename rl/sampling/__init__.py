"""Samplers: LLaDA-style masked-diffusion decoding and KV-cache autoregressive decoding."""
