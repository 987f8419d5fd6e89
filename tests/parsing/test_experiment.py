"""The runner on generated data and on the TOPv2-layout TSV fixture."""

import os

import pytest

from configs.treepiece import get_config
from parsing import experiment as E
from parsing import features as F

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_prepare_on_tsv_fixture(tmp_path):
    c = get_config("tiny")
    c.data_dir = FIXTURES
    prep = E.prepare(c, str(tmp_path))
    assert set(prep["splits"]) == {"train", "valid", "test"}
    assert os.path.exists(tmp_path / "treepiece_vocab.json")
    arrays = E._train_arrays(c, prep)
    assert len(arrays["src"]) == 4
    # The saved vocabulary is what a resumed run loads.
    again = E.prepare(c, str(tmp_path))
    assert again["tp"].units == prep["tp"].units
    for ex in prep["splits"]["train"]:
        a = F.token_actions(ex, prep["vocab"])
        assert F.actions_to_top(a, list(ex.tokens), prep["vocab"]) == F.gold(ex)


def test_config_variants():
    assert get_config("model=ar").system == "ar"
    assert get_config("model=treepiece,atomic").tokenizer.atomic_only
    with pytest.raises(ValueError, match="model"):
        get_config("model=bart")
    with pytest.raises(ValueError, match="unknown config variant key"):
        get_config("modle=ar")


@pytest.mark.slow
@pytest.mark.parametrize("system", ["treepiece", "ar", "nar"])
def test_tiny_run(tmp_path, system):
    c = get_config(f"model={system},tiny")
    r = E.run(c, str(tmp_path))
    assert r["test/well_formed"] == 1.0 and r["compositional/well_formed"] == 1.0
    assert r["latency_ms/batch1"] > 0 and os.path.exists(tmp_path / "plot.png")


@pytest.mark.slow
def test_tiny_run_on_tsv_fixture(tmp_path):
    c = get_config("tiny")
    c.data_dir = FIXTURES
    c.domains = "weather,event"
    r = E.run(c, str(tmp_path))
    assert r["test/well_formed"] == 1.0 and "compositional/exact_match" not in r
