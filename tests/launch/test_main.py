"""launch.main end to end: clear one-line errors on bad input, and exact resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

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
    env = {**os.environ, "LMRL_NO_PROGRESS": "1", "JAX_PLATFORMS": "cpu"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _error_lines(stderr):
    return [ln for ln in stderr.splitlines() if "rror" in ln]


def test_misspelt_key_names_the_key(tmp_path):
    out = _run(_cmd(tmp_path / "w", "--config.optim.lrr=0.1"))
    assert out.returncode != 0
    assert "lrr" in out.stderr and len(_error_lines(out.stderr)) <= 2, out.stderr[-2000:]


def test_wrong_typed_override_names_the_key(tmp_path):
    out = _run(_cmd(tmp_path / "w", "--config.optim.lr=fast"))
    assert out.returncode != 0
    assert "lr" in out.stderr and "fast" in out.stderr, out.stderr[-2000:]


def test_unknown_variant_key_is_one_line(tmp_path):
    out = _run(_cmd(tmp_path / "w", config="configs/sft.py:tsk=sudoku4"))
    assert out.returncode != 0 and "tsk" in out.stderr, out.stderr[-2000:]


def test_workdir_of_another_experiment_is_refused(tmp_path):
    w = tmp_path / "w"
    w.mkdir()
    (w / "config.json").write_text(json.dumps({"experiment": "fred", "variant": ""}))
    out = _run(_cmd(w))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: workdir"), out.stderr[-2000:]
    assert "fred" in out.stderr


def test_corrupt_checkpoint_is_one_clear_line(tmp_path):
    w = tmp_path / "w"
    assert _run(_cmd(w)).returncode == 0
    for root, _, files in os.walk(w / "ckpt"):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\x00garbage")
    out = _run(_cmd(w))
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: checkpoint") and "ckpt" in last, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]  # no "Event loop is closed" walls


def test_sigkill_resume_matches_uninterrupted(tmp_path):
    flags = [
        "--config.sft.steps=40",
        "--config.ckpt_every=5",
        "--config.log_every=5",
        "--config.eval_every=20",
    ]
    ref = tmp_path / "ref"
    assert _run(_cmd(ref, *flags)).returncode == 0
    w = tmp_path / "killed"
    env = {**os.environ, "LMRL_NO_PROGRESS": "1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        _cmd(w, *flags), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 180
    killed = False
    while time.time() < deadline and proc.poll() is None:
        names = os.listdir(w / "ckpt") if (w / "ckpt").exists() else []
        steps = [int(d) for d in names if d.isdigit()]
        if any(10 <= s < 40 for s in steps):
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
