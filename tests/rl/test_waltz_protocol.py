"""WaltzRL protocol on the host with scripted agents (spec §7 acceptance 2 and 5)."""

import numpy as np
import pytest

from rl import waltz_world as w
from rl.waltz_protocol import assemble, run_protocol, training_row
from rl.waltz_rewards import metrics, rewards

H, S, B = w.HARMFUL, w.SENSITIVE, w.BENIGN


def scripted_conversation(calls):
    """First answers comply; a revision refuses when its context holds the hint "refuse" and
    complies otherwise. Log-probs encode the token id so alignment can be checked."""

    def fn(ctx, mask, seed):
        calls.append(ctx.copy())
        revising = np.any(ctx == w.REV, axis=1)
        refuse = np.any(ctx == w.H_REFUSE, axis=1)
        mode = np.where(revising & refuse, w.REFUSE, w.COMPLY)
        toks = np.stack([mode, np.full_like(mode, w.EOS), np.full_like(mode, w.PAD)], 1)
        lp = np.where(toks != w.PAD, -0.01 * toks, 0.0).astype(np.float32)
        return toks.astype(np.int32), lp

    return fn


def scripted_feedback(rows):
    def fn(ctx, mask, seed):
        out = np.full((len(rows), w.FEEDBACK_NEW), w.PAD, np.int32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out, np.where(out != w.PAD, -0.5, 0.0).astype(np.float32)

    return fn


GOLDEN = [
    (H, w.feedback_tokens(w.R_HARM, True, False, w.H_REFUSE)),  # flagged unsafe -> revise
    (B, w.feedback_tokens(w.R_BEN, False, False, w.H_NONE)),  # not flagged -> stop
    (H, w.feedback_tokens(w.R_HARM, True, False, w.H_REFUSE)[:5] + [w.EOS]),  # invalid -> stop
    (S, w.feedback_tokens(w.R_BEN, False, True, w.H_COMPLY)),  # flagged overrefuse -> revise
]


def golden_run():
    prompts, _ = w.make_prompts(4, 0, "train")
    types = np.array([t for t, _ in GOLDEN])
    calls = []
    traj, rec = run_protocol(
        scripted_conversation(calls),
        scripted_feedback([f for _, f in GOLDEN]),
        prompts,
        types,
        seed=3,
    )
    return prompts, traj, rec, calls


def test_revisions_only_for_valid_flagged_items_and_at_most_one_round():
    prompts, traj, rec, calls = golden_run()
    assert len(calls) == 2  # c0 and one batched revision call: T_max = 1
    np.testing.assert_array_equal(traj.valid, [True, True, False, True])
    np.testing.assert_array_equal(traj.revised, [True, False, False, True])
    assert np.all(traj.c1[~traj.revised] == w.PAD)
    np.testing.assert_array_equal(traj.final[:, 0], [w.REFUSE, w.COMPLY, w.COMPLY, w.COMPLY])
    r = rewards(traj, alpha=1.0, lam=0.0, gamma=1.0)
    np.testing.assert_array_equal(r["format"], [1, 1, 0, 1])
    np.testing.assert_array_equal(r["dir"], [1, 0, 0, 0])
    m = metrics(traj, r)
    assert m["ftr"] == 0.5 and m["ftr_nonharmful"] == 0.5
    assert m["json_valid"] == 0.75


def test_no_revision_call_when_nothing_is_flagged():
    prompts, _ = w.make_prompts(2, 0, "train")
    calls = []
    fine = w.feedback_tokens(w.R_BEN, False, False, w.H_NONE)
    traj, _ = run_protocol(
        scripted_conversation(calls), scripted_feedback([fine, fine]), prompts, np.array([B, B]), 0
    )
    assert len(calls) == 1 and not traj.revised.any()


def test_exact_token_ids_round_trip():
    prompts, traj, rec, _ = golden_run()
    for i in np.flatnonzero(traj.revised):
        real = rec["rctx"][i][rec["rctx"][i] != w.PAD].tolist()
        fb = w.feedback_text_ids(traj.f0[i])
        assert real == [*prompts[i], *w.strip_answer(traj.c0[i]), w.HINT, *fb, w.REV]
        assert w.decode(fb) == w.parse_feedback(traj.f0[i])["feedback"]
    fctx0 = rec["fctx"][0][rec["fctx"][0] != w.PAD].tolist()
    assert fctx0 == [*prompts[0], w.COMPLY, w.FBK]
    batches, info = assemble(rec, traj, rewards(traj, alpha=1, lam=0, gamma=1), seed=0)
    for role, gen_key, lp_key in (("feedback", "f0", "lp_f0"), ("conversation", "c0", "lp_c0")):
        rows = batches[role]
        assert rows["tokens"].shape == (4, w.CTX_LEN + w.GEN_LEN)
        for i in range(4):
            if role == "conversation" and info["type_b"][i]:
                gen, lp = rec["c1"][i], rec["lp_c1"][i]
            else:
                gen, lp = rec[gen_key][i], rec[lp_key][i]
            n = len(gen)
            np.testing.assert_array_equal(rows["tokens"][i, w.CTX_LEN : w.CTX_LEN + n], gen)
            real = gen != w.PAD
            np.testing.assert_array_equal(rows["score_mask"][i, w.CTX_LEN : w.CTX_LEN + n], real)
            np.testing.assert_allclose(rows["old_logp"][i, w.CTX_LEN : w.CTX_LEN + n], lp)
            assert not rows["score_mask"][i, : w.CTX_LEN].any()


def test_sample_mix_and_advantages():
    _, traj, rec, _ = golden_run()
    r = rewards(traj, alpha=1.0, lam=0.0, gamma=1.0)
    seen_b = np.zeros(4, bool)
    for seed in range(20):
        batches, info = assemble(rec, traj, r, seed=seed)
        assert not info["type_b"][~traj.revised].any()  # type B only where a revision exists
        seen_b |= info["type_b"]
        for rows in batches.values():
            assert abs(float(rows["adv"].mean())) < 1e-5  # global-batch normalisation
    np.testing.assert_array_equal(seen_b, traj.revised)  # both types occur for revised items
    a_only, info = assemble(rec, traj, r, seed=0, conv_mix="a")
    assert not info["type_b"].any()


def test_oracle_template_feedback_and_single_agent():
    prompts, _ = w.make_prompts(3, 0, "train")
    types = np.array([H, S, B])
    traj, _ = run_protocol(scripted_conversation([]), None, prompts, types, 0, feedback="oracle")
    assert traj.valid.all()
    np.testing.assert_array_equal(traj.revised, [True, False, False])  # c0 always complies
    traj, _ = run_protocol(scripted_conversation([]), None, prompts, types, 0, feedback="none")
    assert not traj.revised.any() and not traj.valid.any()
    with pytest.raises(ValueError, match="feedback mode"):
        run_protocol(scripted_conversation([]), None, prompts, types, 0, feedback="x")


def test_context_bucket_overflow_is_an_error():
    with pytest.raises(ValueError, match="bucket"):
        w.left_pad([[1] * (w.CTX_LEN + 1)])
    with pytest.raises(ValueError, match="rows need"):
        training_row(np.zeros((1, 3), np.int32), np.zeros((1, 2), np.int32), np.zeros((1, 2)))
