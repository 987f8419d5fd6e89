"""The LlamaRL loop (configs/llamarl.py:tiny) on 8 fake CPU devices, 6 RL steps per mode: sync
(k=0, co-located) reproduces its losses for the same seed with importance weights 1; async (k=1)
and async_k (k=2) run on split sub-meshes with lags k and measurable off-policyness; the
deterministic async mode is reproducible too. A dense stand-in reward is used (dist_check.py).
~2.5 min on the shared 2-core CPU, hence `slow`."""

import os

import pytest
from child_env import run_check

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.slow


def _check(mode: str) -> dict:
    return run_check(os.path.join(HERE, "dist_check.py"), mode, timeout=900)


@pytest.fixture(scope="module")
def runs():
    return _check("loop")


def test_sync_mode_reproduces_losses_and_is_on_policy(runs):
    a, b = runs["sync"], runs["sync_again"]
    assert a["loss"] == b["loss"] and len(a["loss"]) == 6
    assert any(abs(x) > 1e-3 for x in a["loss"])  # real updates, not zero advantages
    assert a["result"]["layout"] == "colocated (8 devices)"
    assert a["lag"] == [0.0] * 6
    assert all(abs(w - 1.0) < 1e-5 for w in a["is_mean"])
    assert all(k < 1e-6 for k in a["kl_k3"])
    assert all(r < 1.0 + 1e-4 for r in a["ratio_max"])


def test_runner_scores_the_warm_start_and_the_final_policy_on_held_out_prompts(runs):
    """rl/ar_eval.py inside the llamarl runner: the warm start's scores are the same in every
    mode (same SFT, prompts and keys), and each run reports the change with its interval."""
    res = [runs[m]["result"] for m in ("sync", "async", "async_k")]
    for key in ("before/accuracy", "before/pass1", "before/answer_ll"):
        assert key in res[0] and all(r[key] == res[0][key] for r in res)
    for r in res:
        for m in ("greedy", "pass1", "answer_ll"):
            assert r[f"change/{m}_lo"] <= r[f"change/{m}_mean"] <= r[f"change/{m}_hi"]
    # the dense stand-in reward moves the policy: the bound on the true answer changes
    assert runs["sync"]["result"]["after/answer_ll"] != runs["sync"]["result"]["before/answer_ll"]


def test_async_modes_lag_by_k_and_are_deterministic(runs):
    one, k2 = runs["async"], runs["async_k"]
    assert one["result"]["layout"] == "split (trainer 4, generator 4 devices)"
    assert one["lag"] == [0.0] + [1.0] * 5
    assert k2["lag"] == [0.0, 1.0] + [2.0] * 4
    assert one["result"]["staleness/dropped"] == 0 and k2["result"]["staleness/dropped"] == 0
    assert runs["async_again"]["loss"] == one["loss"]  # the simulated clock: no timing effects
    # Off-policy samples show up in the statistics AIPO corrects with.
    assert max(one["kl_k3"]) > 1e-4 and max(k2["kl_k3"]) > max(one["kl_k3"])
    assert max(k2["ratio_max"]) > 1.05
    # The first step is on-policy in every mode: the same loss on either layout.
    assert one["loss"][0] == pytest.approx(runs["sync"]["loss"][0], rel=1e-4)


def test_ratio_variant_runs_through_the_same_loop(runs):
    r = runs["async_ratio"]
    assert r["lag"] == runs["async"]["lag"] and r["loss"] != runs["async"]["loss"]
    assert r["is_mean"] == pytest.approx(runs["async"]["is_mean"], rel=1e-6)


def test_killed_run_resumes_losslessly():
    """Killed during step 4, resumed from the step-2 checkpoint (trainer state + queued rollouts
    + the generator's weight sets): the same losses as the uninterrupted run, every rollout
    sequence number consumed exactly once."""
    r = _check("resume")
    assert r["killed"] and r["frontier_files"] == ["2.pkl"]
    assert r["resumed_steps"] == 4
    assert r["resumed_seq"] == r["full_seq"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert r["resumed_loss"] == r["full_loss"]
