"""Pulse runs of the READ experiment (peft/experiment.py) and its pieces."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs.read import get_config
from peft import experiment
from peft.finetune import task_loss


@pytest.mark.slow
def test_tiny_run_writes_results_and_resumes(tmp_path):
    config = get_config("tiny,baselines=head")
    wd = str(tmp_path)
    out = experiment.run(config, wd)
    assert {"read/test_score", "head/test_score", "read/trainable_params"} <= set(out)
    for f in ("results.json", "result.json", "plot.png", "metrics.jsonl"):
        assert os.path.exists(os.path.join(wd, f)), f
    res = json.load(open(os.path.join(wd, "results.json")))
    assert res["methods"]["read"]["cached_states"] is True
    # The side network only: less compiled memory than training through the backbone would need.
    assert 0 < res["methods"]["head"]["peak_bytes"] < res["methods"]["read"]["peak_bytes"]
    # READ (hidden 32, d 32, GRU) + head: 3(rd + r^2 + 2r) + rd + 2d + (2d + 2).
    assert out["read/trainable_params"] == 3 * (32 * 32 * 2 + 64) + 32 * 32 + 64 + 66
    # A second run finds every stage finished in the workdir and reproduces the numbers.
    again = experiment.run(config, wd)
    assert again == pytest.approx(out)


def test_config_variants():
    c = get_config("method=lora,task=overlap,baselines=")
    assert c.method == "lora" and c.data.task == "overlap" and c.baselines == ""
    with pytest.raises(ValueError, match="method"):
        get_config("method=prefix")
    with pytest.raises(ValueError, match="baseline"):
        get_config("baselines=full+nope")
    assert set(get_config().finetune.lr) == {
        "read",
        "lora",
        "bitfit",
        "adapter",
        "prompt",
        "full",
        "head",
        "ladder",
    }


def test_task_loss_golden():
    out = jnp.asarray([[0.0, np.log(3.0)], [0.0, 0.0]])
    s, d, aux = task_loss(out, jnp.asarray([1, 0]), 2)
    assert float(d) == 2.0
    assert float(s) == pytest.approx(-np.log(0.75) - np.log(0.5), rel=1e-6)
    assert float(aux["train/acc"]) == 1.0  # ties go to class 0
    s, d, _ = task_loss(jnp.asarray([[1.0], [3.0]]), jnp.asarray([2.0, 2.5]), 0)
    assert float(s) == pytest.approx(1.0 + 0.25)


def test_pair_task_gets_the_budget_full_fine_tuning_needs():
    """At 500 steps / lr 5e-4 full fine-tuning stayed at chance on `pair` (issue 15.13)."""
    from configs.read import get_config

    c = get_config("task=pair")
    assert c.finetune.steps == c.finetune.optim.total_steps == 1000
    assert c.finetune.lr.full == 2e-3 and c.finetune.lr.read == get_config().finetune.lr.read
    assert get_config("task=agree").finetune.steps == 500
    assert get_config("task=pair,tiny").finetune.steps == 2
