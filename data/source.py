"""The data path every task runner reads through: array_record files, `tfds.data_source`, grain.

A task's examples for one (split, size, seed) are built once into a TFDS array_record dataset
(builder `lmrl_task`, one builder config per task / options / split / size / seed, order kept:
example i of the build is example i of `Task.generate`) under a data directory
(`$LMRL_TFDS_DIR`, default `~/.cache/lmrl/tfds`), and read back lazily: `examples` returns a
`grain.MapDataset` over the builder's `as_data_source` (what `tfds.data_source` returns), so a
large split never sits in memory and batch i is a pure function of i (exact resume by
position). `SourcedTask` wraps a task so that its `generate` reads through this path: the
runners keep calling `task.generate(split, num, seed)` and get exactly the generated examples,
from disk.

Builds are guarded by a file lock (several processes may ask for the same dataset at once) and
are deterministic, so a rebuilt dataset is byte-identical.

  python -m data.source --task=sudoku4 --split=train --num=4000 --seed=1   # build one split
  python -m data.source --task=gsm8k --split=test --file=/data/gsm8k/test.jsonl   # convert a file
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
from typing import Any

import grain
import numpy as np

DEFAULT_DATA_DIR = os.path.join(os.path.expanduser("~"), ".cache", "lmrl", "tfds")


def data_dir() -> str:
    return os.environ.get("LMRL_TFDS_DIR", DEFAULT_DATA_DIR)


def _builder_class():
    """The `lmrl_task` builder (defined lazily: importing TFDS costs ~2 s)."""
    global _BUILDER
    if _BUILDER is not None:
        return _BUILDER
    import tensorflow_datasets as tfds
    from etils import epath

    from data import tasks
    from data.builders import _FEATURES

    @dataclasses.dataclass(eq=False)
    class SplitConfig(tfds.core.BuilderConfig):
        task: str = ""
        task_kwargs: str = "{}"  # JSON, sorted keys
        split: str = "train"
        num: int = 0
        seed: int = 0
        path: str = ""  # a file-backed task's source file ("" for a generated task)

    class LmrlTask(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """One split of a registered `data.tasks` task, in generation order."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "Examples of data.tasks, in Task.generate order."}
        BUILDER_CONFIGS = []

        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls) -> epath.Path:
            return epath.Path(__file__)

        def _task(self):
            cfg = self.builder_config
            return tasks.get(cfg.task, **json.loads(cfg.task_kwargs))

        def _info(self):
            features = {k: _FEATURES[v]() for k, v in self._task().features.items()}
            return tfds.core.DatasetInfo(
                builder=self,
                description="A data.tasks split, in generation order.",
                features=tfds.features.FeaturesDict(features),
                disable_shuffling=True,  # keep example i = generated example i
            )

        def _split_generators(self, dl_manager):
            return {self.builder_config.split: self._generate_examples()}

        def _generate_examples(self):
            cfg = self.builder_config
            if cfg.path and not cfg.num:  # a file converted as it is
                yield from enumerate(self._task().load(cfg.path, cfg.split))
            else:  # generated, or drawn from the task's own file (`path` then keys the build)
                yield from enumerate(self._task().generate(cfg.split, cfg.num, cfg.seed))

    _BUILDER = (LmrlTask, SplitConfig)
    return _BUILDER


_BUILDER = None


def _task_code(task: str, task_kwargs: dict) -> str:
    """The source of the task's class (empty when unavailable): part of a build's key, so a
    changed generator (e.g. a task registered in a notebook and then edited) builds afresh
    instead of reading examples its old code wrote."""
    import inspect

    from data import tasks

    try:
        return inspect.getsource(type(tasks.get(task, **(task_kwargs or {}))))
    except (OSError, TypeError, KeyError, ValueError):
        return ""


def config_name(task: str, task_kwargs: dict, split: str, num: int, seed: int) -> str:
    kw = json.dumps(task_kwargs or {}, sort_keys=True)
    digest = hashlib.sha1((kw + _task_code(task, task_kwargs)).encode()).hexdigest()[:8]
    return f"{task}_{split}_n{num}_s{seed}_{digest}"


@contextlib.contextmanager
def _locked(root: str):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def file_digest(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def build(
    task: str,
    split: str,
    num: int,
    seed: int,
    task_kwargs: dict | None = None,
    root: str | None = None,
    path: str = "",
):
    """Builds (or finds) the array_record dataset of one split; returns the TFDS builder.

    A file-backed task (`path` given) is converted from its public format by the task's `load`;
    the build is keyed by the file's content, so an edited file is converted again.
    """
    cls, config_cls = _builder_class()
    root = root or data_dir()
    kw = json.dumps(task_kwargs or {}, sort_keys=True)
    if path:
        path = os.path.abspath(path)
        name = f"{config_name(task, task_kwargs or {}, split, num, seed)}_file{file_digest(path)}"
    else:
        name = config_name(task, task_kwargs or {}, split, num, seed)
    cfg = config_cls(
        name=name,
        task=task,
        task_kwargs=kw,
        split=split,
        num=int(num),
        seed=int(seed),
        path=path,
    )
    builder = cls(config=cfg, data_dir=root, file_format="array_record")
    if not builder.is_prepared():
        with _locked(root):
            builder = cls(config=cfg, data_dir=root, file_format="array_record")
            if not builder.is_prepared():
                import tensorflow_datasets as tfds

                tfds.disable_progress_bar()
                with contextlib.redirect_stdout(io.StringIO()):  # TFDS's own banner
                    builder.download_and_prepare()
                n = builder.info.splits[split].num_examples
                print(f"data: built {cfg.name} ({n} examples) in {root}")
    return builder


def to_example(record: dict[str, Any]) -> dict[str, Any]:
    """A data-source record (bytes, numpy) as a plain task example dict."""
    out = {}
    for k, v in record.items():
        if isinstance(v, bytes):
            out[k] = v.decode("utf-8")
        elif isinstance(v, (np.ndarray, list)):
            out[k] = [int(x) for x in v]
        else:
            out[k] = int(v)
    return out


def examples(
    task: str,
    split: str,
    num: int,
    seed: int,
    task_kwargs: dict | None = None,
    root: str | None = None,
    path: str = "",
) -> grain.MapDataset:
    """The split's examples as a lazy `grain.MapDataset` read through `tfds.data_source`."""
    builder = build(task, split, num, seed, task_kwargs, root, path)
    # What `tfds.data_source(name)` returns, from the (unregistered, per-config) builder itself.
    source = builder.as_data_source(split=split)
    return grain.MapDataset.source(source).map(to_example)


class SourcedTask:
    """A task whose `generate(split, num, seed)` reads its examples through `examples` (from
    array_record files) instead of generating them in memory; everything else is the task's."""

    def __init__(self, task, name: str, task_kwargs: dict | None = None, root: str | None = None):
        self._task = task
        self._name = name
        self._kwargs = dict(task_kwargs or {})
        self._root = root

    def __getattr__(self, attr):
        return getattr(self._task, attr)

    def source(self, split: str, num: int, seed: int) -> grain.MapDataset:
        # A task drawing from its own files (GSM8K/MATH500 `generate`): the file's content keys
        # the build, so an edited file is read again; a missing file raises the task's error.
        split_path = getattr(self._task, "split_path", None)
        path = split_path(split) if split_path else ""
        if path and not os.path.exists(path):
            self._task.generate(split, num, seed)  # raises MissingFileError naming the path
        return examples(self._name, split, num, seed, self._kwargs, self._root, path=path)

    def generate(self, split: str, num: int, seed: int) -> list[dict[str, Any]]:
        ds = self.source(split, num, seed)
        return [ds[i] for i in range(len(ds))]

    def load(self, path: str | None = None, split: str = "test") -> list[dict[str, Any]]:
        """A file-backed task's examples, converted once to array_record and read from there.

        Without `path` the task's default location is used; a missing file raises the task's
        own error (naming the expected path and format).
        """
        default = getattr(self._task, "default_path", None)
        path = path or (default(split) if default else None)
        if not path or not os.path.exists(path):
            return self._task.load(path, split)  # raises the task's MissingFileError
        ds = examples(self._name, split, 0, 0, self._kwargs, self._root, path=path)
        return [ds[i] for i in range(len(ds))]


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--num", type=int, default=0, help="examples to generate (generated tasks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task_kwargs", default="{}", help="JSON options of the task")
    p.add_argument("--file", default="", help="a file-backed task's source (GSM8K/MATH500 JSONL)")
    p.add_argument("--data_dir", default=None)
    a = p.parse_args(argv)
    b = build(a.task, a.split, a.num, a.seed, json.loads(a.task_kwargs), a.data_dir, a.file)
    print(f"{b.info.full_name} in {b.data_dir}: {b.info.splits[a.split].num_examples} examples")


if __name__ == "__main__":
    main()
