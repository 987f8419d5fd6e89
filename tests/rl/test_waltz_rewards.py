"""WaltzRL rewards, judges and the strict feedback parser (spec §7 acceptance 1)."""

import numpy as np
import pytest

from rl import waltz_world as w
from rl.waltz_rewards import Trajectories, f1, metrics, rewards, safeguard

H, S, B = w.HARMFUL, w.SENSITIVE, w.BENIGN
ANS = {"refuse": [w.REFUSE, w.EOS, w.PAD], "comply": [w.COMPLY, w.EOS, w.PAD]}
NONE = [w.PAD] * 3


def traj(rows):
    """rows: (type, c0, c1 or None, valid, pred_unsafe, pred_over)."""
    types = np.array([r[0] for r in rows])
    c0 = np.array([ANS[r[1]] for r in rows], np.int32)
    c1 = np.array([ANS[r[2]] if r[2] else NONE for r in rows], np.int32)
    valid, pu, po = (np.array([r[i] for r in rows]) for i in (3, 4, 5))
    revised = np.array([r[2] is not None for r in rows])
    f0 = np.zeros((len(rows), w.FEEDBACK_NEW), np.int32)
    return Trajectories(types, c0, f0, c1, valid, pu, po, revised)


def test_dir_sign_and_range():
    t = traj(
        [
            (H, "comply", "refuse", True, True, False),  # unsafe -> safe: +1
            (S, "comply", "refuse", True, True, False),  # fine -> overrefusal: -1
            (S, "refuse", "comply", True, False, True),  # overrefusal -> fine: +1
            (H, "comply", "comply", True, True, False),  # unsafe -> unsafe: 0
            (B, "comply", None, True, False, False),  # no revision: 0
        ]
    )
    r = rewards(t, alpha=1.0, lam=0.0, gamma=0.0)
    np.testing.assert_array_equal(r["dir"], [1, -1, 1, 0, 0])
    assert set(np.unique(r["dir"])) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(r["r_c0"], [0, 1, 0, 0, 1])


def test_dir_is_zero_without_revision_even_if_c1_holds_tokens():
    t = traj([(H, "comply", "refuse", True, True, False)])
    t.revised[:] = False  # c1 has tokens but no revision happened
    assert rewards(t, alpha=1.0, lam=0.0, gamma=0.0)["dir"][0] == 0.0


def test_invalid_json_gets_zero_format_and_label():
    t = traj([(H, "comply", None, False, False, False), (B, "comply", None, True, False, False)])
    r = rewards(t, alpha=1.0, lam=1.0, gamma=1.0)
    np.testing.assert_array_equal(r["format"], [0, 1])
    np.testing.assert_array_equal(r["label"], [0, 1])
    np.testing.assert_array_equal(r["r_f"], [0, 2])


def test_gate_counts_dir_only_with_correct_labels():
    # Unsafe c0 fixed by the revision, but the feedback said "overrefuse": wrong labels.
    t = traj(
        [(H, "comply", "refuse", True, False, True), (H, "comply", "refuse", True, True, False)]
    )
    gated = rewards(t, alpha=0.65, lam=0.0, gamma=0.1, gate=True)
    open_ = rewards(t, alpha=0.65, lam=0.0, gamma=0.1, gate=False)
    np.testing.assert_allclose(gated["r_f"], [0.1, 0.75])
    np.testing.assert_allclose(open_["r_f"], [0.75, 0.75])


def test_lambda_zero_removes_the_additive_label_term():
    t = traj([(B, "comply", None, True, False, False), (B, "comply", None, True, True, False)])
    r1 = rewards(t, alpha=1.0, lam=0.5, gamma=0.1)
    r2 = rewards(t, alpha=1.0, lam=0.0, gamma=0.1)
    np.testing.assert_allclose(r1["r_f"], [0.6, 0.1])
    np.testing.assert_allclose(r2["r_f"], [0.1, 0.1])


def test_stage_two_uses_lambda_zero():
    from configs.waltz import get_config
    from rl.run_waltz import stage_coefs

    rc = get_config().rl
    assert stage_coefs(rc, 1) == (rc.alpha, rc.lam, rc.gamma) and rc.lam > 0
    assert stage_coefs(rc, 2) == (rc.alpha, 0.0, rc.gamma)


def test_metrics_golden_batch():
    t = traj(
        [
            (H, "comply", "refuse", True, True, False),  # flagged, fixed
            (H, "comply", None, True, False, False),  # missed: unsafe final
            (S, "refuse", "comply", True, False, True),  # flagged, fixed
            (S, "comply", None, False, False, False),  # invalid JSON, fine answer
            (B, "comply", "refuse", True, True, False),  # false alarm, made worse
            (B, "comply", None, True, False, False),  # correct, no trigger
        ]
    )
    m = metrics(t)
    assert m["asr"] == 0.5 and m["orr"] == 0.0 and m["orr_benign"] == 0.5
    assert m["ftr"] == pytest.approx(3 / 6) and m["ftr_nonharmful"] == pytest.approx(2 / 4)
    assert m["json_valid"] == pytest.approx(5 / 6)
    assert m["label_acc"] == pytest.approx(3 / 6)
    # flag vs problem: pred [1,0,1,0,1,0], true [1,1,1,0,0,0] -> tp 2, f1 = 4/6
    assert m["label_f1"] == pytest.approx(4 / 6)
    assert (m["dir_pos"], m["dir_zero"], m["dir_neg"]) == pytest.approx((2 / 6, 3 / 6, 1 / 6))
    assert f1([0, 0], [0, 0]) == 1.0


def test_safeguard_replaces_flagged_unsafe_answers_with_refusals():
    t = traj([(H, "comply", None, True, True, False), (S, "comply", None, True, True, False)])
    g = safeguard(t, ANS["refuse"])
    m = metrics(g)
    assert m["asr"] == 0.0 and m["orr"] == 1.0  # the false alarm on a benign prompt refuses


def test_judge_and_keyword_judge():
    types = np.array([H, H, S, B, B])
    ans = np.array([ANS["comply"], ANS["refuse"], ANS["refuse"], ANS["comply"], NONE])
    u, o = w.judge(types, ans)
    np.testing.assert_array_equal(u, [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(o, [0, 0, 1, 0, 1])
    ku, ko = w.keyword_labels(types, ans)
    np.testing.assert_array_equal((ku, ko), (u, o))  # agree on the world's answers
    assert w.keyword_judge(True, "Sure! Step one ...") == (True, False)
    assert w.keyword_judge(True, "I\u2019m sorry, but I can\u2019t help.") == (False, False)
    assert w.keyword_judge(False, "I cannot assist with that.") == (False, True)
    with pytest.raises(FileNotFoundError):
        w.classifier_judge("/nonexistent/wildguard")


def test_parse_feedback_is_strict():
    good = w.feedback_tokens(w.R_HARM, True, False, w.H_REFUSE)
    obj = w.parse_feedback(good)
    assert obj == {
        "reasoning": "harmful",
        "unsafe": True,
        "overrefuse": False,
        "feedback": "refuse",
    }
    assert w.decode(w.feedback_text_ids(good)) == obj["feedback"]
    assert w.parse_feedback(good[:-2] + [w.EOS]) is None  # truncated
    bad_bool = list(good)
    bad_bool[3] = w.H_NONE  # a word where a boolean belongs
    assert w.parse_feedback(bad_bool) is None
    missing = good[:4] + good[6:]  # no overrefuse key
    assert w.parse_feedback(missing) is None
    assert w.parse_feedback([w.ASK, w.EOS]) is None
    # Text after EOS is ignored; padding is not text.
    assert w.parse_feedback(good + [w.OPEN, w.PAD]) == obj
