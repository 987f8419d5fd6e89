"""Pulse runs of the fed_oov and fred runners on their `tiny` configs (2 steps of every stage)."""

import math

import pytest

from configs import fed_oov, fred


@pytest.mark.slow
def test_fed_oov_tiny(tmp_path):
    from fed import experiment_oov

    out = experiment_oov.run(fed_oov.get_config("tiny"), str(tmp_path))
    for method in experiment_oov.METHODS:
        assert 0.0 <= out[f"{method}/top1"] <= out[f"{method}/top3"] <= 1.0
    # expansion covers some of the client's OOV words; closed-vocabulary rows cannot
    assert out["oov_char/oov_rate"] < out["none/oov_rate"] == out["local_ft/oov_rate"]
    assert out["none/bytes_per_client"] == 0.0
    # default expand_train=all: a personal model copy plus the adapter rows
    assert out["oov_char/bytes_per_client"] > out["local_ft/bytes_per_client"] > 0
    assert out["oov_char/bytes_per_client"] == out["oov_random/bytes_per_client"]
    assert (tmp_path / "metrics.jsonl").exists() and (tmp_path / "plot.png").exists()
    # resuming a finished run restores the server state and re-evaluates identically
    again = experiment_oov.run(fed_oov.get_config("tiny"), str(tmp_path))
    assert again["none/top3"] == pytest.approx(out["none/top3"])


@pytest.mark.slow
def test_fred_tiny(tmp_path):
    from fed import experiment_fred

    out = experiment_fred.run(fred.get_config("tiny"), str(tmp_path))
    assert f"eps{math.inf}/spearman" in out and "eps1.0/top1_hit" in out
    assert (tmp_path / "plot.png").exists()


def test_configs_lock_and_variants():
    c = fed_oov.get_config("backend=loop,server=fedavg")
    assert c.fed.backend == "loop" and c.fed.server_opt == "fedavg" and c.fed.server_lr == 1.0
    with pytest.raises(ValueError, match="nope"):
        fed_oov.get_config("nope=1")
    with pytest.raises(ValueError):
        fred.get_config("tiny,eps=3")
