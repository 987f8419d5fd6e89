"""WaltzRL runner: a finished run restores without training; a cut run resumes exactly."""

import json

import pytest

from configs.waltz import get_config
from rl.run_waltz import run


def _cfg(stage2_steps: int):
    c = get_config("tiny")
    c.rl.stage2_steps = stage2_steps
    return c


def _same(a: dict, b: dict, system: str) -> bool:
    """The `<system>/<metric>` entries of two results are equal (NaN-safe)."""
    pick = lambda r: {k: v for k, v in r.items() if k.startswith(system + "/")}  # noqa: E731
    return bool(pick(a)) and json.dumps(pick(a), sort_keys=True) == json.dumps(
        pick(b), sort_keys=True
    )


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(tmp_path):
    full = run(_cfg(2), str(tmp_path / "full"))
    assert full["stage1_conversation_bitwise_unchanged"] and full["update_traces"] == 1
    run(_cfg(1), str(tmp_path / "cut"))  # "interrupted" after one stage-2 step
    resumed = run(_cfg(2), str(tmp_path / "cut"))
    for k in ("untrained_pair", "stage1", "final"):
        assert _same(resumed, full, k), k
    again = run(_cfg(2), str(tmp_path / "full"))  # finished: restores, trains nothing
    assert _same(again, full, "final") and again["update_traces"] == 0
