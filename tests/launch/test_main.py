"""launch.main end to end: clear one-line errors on bad input, and exact resume after SIGKILL.

Each subprocess pays a Python + JAX start-up, so checks share processes: the fast failures run
side by side, and the SIGKILL test's reference run is reused for the corrupt-checkpoint check.
"""

import json
import os
import signal
import subprocess
import sys
import time

from child_env import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "configs/sft.py:tiny"


def _cmd(workdir, *flags, config=TINY):
    return [
        sys.executable,
        "-m",
        "launch.main",
        f"--config={config}",
        f"--workdir={workdir}",
        *flags,
    ]


def _run(cmd, timeout=240):
    env = child_env()
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _error_lines(stderr):
    return [ln for ln in stderr.splitlines() if "rror" in ln]


def test_bad_flags_and_foreign_workdir_fail_fast_with_one_line(tmp_path):
    """Failures before any training, through the real CLI, run side by side (one process each;
    they were four sequential tests): a misspelt key, a wrongly typed override, an unknown
    variant key and the workdir of another experiment."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"experiment": "fred", "variant": ""}))
    cases = {
        "misspelt": (_cmd(tmp_path / "a", "--config.optim.lrr=0.1"), ["lrr"]),
        "typed": (_cmd(tmp_path / "b", "--config.optim.lr=fast"), ["lr", "fast"]),
        "variant": (_cmd(tmp_path / "c", config="configs/sft.py:tsk=sudoku4"), ["tsk"]),
        "foreign": (_cmd(foreign), ["fred"]),
    }
    env = child_env()
    procs = {
        k: subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for k, (cmd, _) in cases.items()
    }
    try:
        errs = {}
        for k, p in procs.items():
            _, errs[k] = p.communicate(timeout=240)
            assert p.returncode != 0, (k, errs[k][-2000:])
            assert all(w in errs[k] for w in cases[k][1]), (k, errs[k][-2000:])
            assert len(_error_lines(errs[k])) <= 2, (k, errs[k][-2000:])
        assert procs["foreign"].returncode == 2
        last = errs["foreign"].strip().splitlines()[-1]
        assert last.startswith("error: workdir"), errs["foreign"][-2000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()


def test_sigkill_resume_matches_uninterrupted_then_corrupt_checkpoint_is_one_line(tmp_path):
    """One reference run serves two checks: a run SIGKILLed mid-way and resumed ends with the
    reference's numbers; then the reference's checkpoints are overwritten with garbage and a
    rerun fails with one clear line (exit 2, no traceback)."""
    flags = [  # 20 steps leave ~10 to run after the kill (resume from step 10 or 15)
        "--config.sft.steps=20",
        "--config.ckpt_every=5",
        "--config.log_every=5",
        "--config.eval_every=10",
    ]
    ref = tmp_path / "ref"
    assert _run(_cmd(ref, *flags)).returncode == 0
    w = tmp_path / "killed"
    env = child_env()
    proc = subprocess.Popen(
        _cmd(w, *flags), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 180
    killed = False
    while time.time() < deadline and proc.poll() is None:
        names = os.listdir(w / "ckpt") if (w / "ckpt").exists() else []
        steps = [int(d) for d in names if d.isdigit()]
        if any(10 <= s < 20 for s in steps):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    assert killed, "run finished before it could be killed; make it longer"
    assert _run(_cmd(w, *flags)).returncode == 0
    a = json.loads((ref / "result.json").read_text())
    b = json.loads((w / "result.json").read_text())
    assert set(a) == set(b)
    for k in a:
        assert abs(a[k] - b[k]) <= 1e-6, (k, a[k], b[k])
    for root, _, files in os.walk(ref / "ckpt"):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\x00garbage")
    out = _run(_cmd(ref, *flags))
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: checkpoint") and "ckpt" in last, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]  # no "Event loop is closed" walls
