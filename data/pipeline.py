"""Static-shape encoding and grain batching for task examples.

`encode_sft_example` builds one right-padded `[bos] prompt completion [eos]` row with masks for
teacher forcing (and for RL objectives that score completion tokens, e.g. SPG arXiv:2510.09541's
completion-only loss set); `encode_prompts` builds LEFT-padded prompt batches for generation, so
every prompt ends at the same position; `make_batches` turns records into a `grain.MapDataset`
of fixed-size batches.

Resumption: `make_batches(...)[i]` is a pure function of (records, batch_size, seed, i): grain
shuffles each epoch with a permutation derived from the seed and epoch, and the dataset repeats
forever. A run resumed at step `s` therefore gets exactly the batch the uninterrupted run would
have seen by indexing `ds[s]`; no iterator state has to be checkpointed beyond the step.
Examples longer than the static length raise `ValueError` naming the example; nothing is truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np


def encode_sft_example(
    example: dict[str, Any],
    task,
    tokenizer,
    max_len: int,
    style: str = "compact",
    *,
    index: int = 0,
) -> dict[str, np.ndarray]:
    """Encodes `[bos] prompt target [eos]`, right-padded to `max_len`.

    Args:
      example: a task example.
      task: the `data.tasks.Task` that renders it.
      tokenizer: a `data.tokenizer` tokenizer.
      max_len: static length T.
      style: prompt/target style.
      index: the example's position, used in the error message.

    Returns:
      `tokens [T] int32`, `mask [T] bool` (real tokens), `prompt_mask [T] bool` (bos + prompt),
      `loss_mask [T] bool` (completion tokens including eos).

    Raises:
      ValueError: if the encoded example is longer than `max_len`.
    """
    prompt = tokenizer.encode(task.prompt(example, style), add_bos=True)
    completion = tokenizer.encode(task.target(example, style), add_eos=True)
    n = len(prompt) + len(completion)
    if n > max_len:
        raise ValueError(
            f"example {index} is {n} tokens (prompt {len(prompt)}, completion {len(completion)}) "
            f"> max_len {max_len}; raise max_len or filter the data (no silent truncation)"
        )
    tokens = np.full((max_len,), tokenizer.pad_id, np.int32)
    tokens[:n] = prompt + completion
    pos = np.arange(max_len)
    return {
        "tokens": tokens,
        "mask": pos < n,
        "prompt_mask": pos < len(prompt),
        "loss_mask": (pos >= len(prompt)) & (pos < n),
    }


def encode_sft(
    examples: Sequence[dict[str, Any]], task, tokenizer, max_len: int, style: str = "compact"
) -> list[dict[str, np.ndarray]]:
    """`encode_sft_example` over a list (errors name the failing index)."""
    return [
        encode_sft_example(ex, task, tokenizer, max_len, style, index=i)
        for i, ex in enumerate(examples)
    ]


def encode_prompts(
    examples: Sequence[dict[str, Any]], task, tokenizer, max_prompt_len: int, style: str = "compact"
) -> dict[str, np.ndarray]:
    """Encodes `[bos] chat_prompt(prompt)` for each example, LEFT-padded to `max_prompt_len`.

    `tokenizer.chat_prompt` is the identity for the generated-task tokenizers and the checkpoint's
    chat template for `HFTokenizer` (pretrained instruct models see one user turn).

    Returns:
      `tokens [B, P] int32` and `mask [B, P] bool` (True at real tokens, which end at P).

    Raises:
      ValueError: naming the first prompt longer than `max_prompt_len`.
    """
    tokens = np.full((len(examples), max_prompt_len), tokenizer.pad_id, np.int32)
    mask = np.zeros((len(examples), max_prompt_len), bool)
    for i, ex in enumerate(examples):
        ids = tokenizer.encode(tokenizer.chat_prompt(task.prompt(ex, style)), add_bos=True)
        if len(ids) > max_prompt_len:
            raise ValueError(
                f"prompt of example {i} is {len(ids)} tokens > max_prompt_len {max_prompt_len}"
            )
        if ids:
            tokens[i, -len(ids) :] = ids
            mask[i, -len(ids) :] = True
    return {"tokens": tokens, "mask": mask}


def make_batches(
    records: Sequence[dict[str, np.ndarray]], batch_size: int, seed: int
) -> grain.MapDataset:
    """An infinite `grain.MapDataset` whose item `i` is batch `i` (see the module docstring).

    `records` is a sequence of records or a (lazy) `grain.MapDataset` of them.

    Each epoch is a fresh seeded permutation of `records`; batches are stacked dicts with a leading
    `batch_size` axis and may straddle epoch boundaries (every batch is full).
    """
    if not len(records):
        raise ValueError("no records to batch")
    if isinstance(records, grain.MapDataset):
        source = records
    else:
        source = grain.MapDataset.source(list(records))
    return source.shuffle(seed=seed).repeat().batch(batch_size, drop_remainder=True)
