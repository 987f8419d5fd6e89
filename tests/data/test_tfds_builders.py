"""TFDS builders: build each generated task as array_record, read back with tfds.data_source."""

import glob
import os
import sys

import pytest
import tensorflow_datasets as tfds

from data import builders, tasks


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    for name in builders.BUILDERS:
        builders.build(name, d, config="small")
    return d


@pytest.mark.parametrize("name", sorted(builders.BUILDERS))
def test_data_source_reads_each_dataset(name, data_dir):
    assert "tensorflow" not in sys.modules  # TensorFlow is not needed (nor installed)
    builder_name = builders.BUILDERS[name].name
    task = tasks.get(name)
    for split, n in (("train", 64), ("test", 16)):
        ds = tfds.data_source(f"{builder_name}/small", data_dir=data_dir, split=split)
        assert len(ds) == n
        got = sorted(str(builders.to_example(ds[i])) for i in range(n))
        want = sorted(str(dict(sorted(e.items()))) for e in task.generate(split, n, seed=0))
        assert got == want
        ex = builders.to_example(ds[0])
        assert task.reward(task.target(ex), ex) == task.reward_range()[1]


def test_build_is_byte_identical(data_dir, tmp_path):
    builders.build("countdown", str(tmp_path), config="small")

    def shards(root):
        files = sorted(
            glob.glob(os.path.join(root, "lmrl_countdown", "small", "*", "*array_record*"))
        )
        return [open(f, "rb").read() for f in files]

    assert shards(data_dir) and shards(data_dir) == shards(str(tmp_path))
