"""launch.pod and launch.slurm: the generated command lines and batch scripts, never run for real.

The remote command and the filled batch script are executed locally with stub `python3`/`srun`
programs that record their argv, so quoting is checked end to end; gcloud and sbatch are never
called (dry runs, or an injected runner).
"""

import os
import shlex
import shutil
import stat
import subprocess
import sys

import pytest

from launch import pod, slurm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POD = ["--tpu=my-pod", "--zone=us-central2-b", "--project=proj", "--config=configs/spg.py:tiny"]
BASH = shutil.which("bash")


def _stub(dirpath, name):
    """An executable `name` in `dirpath` that prints its argv, one per line, after 'ARGV'."""
    path = os.path.join(dirpath, name)
    with open(path, "w") as f:
        f.write('#!/bin/sh\necho ARGV\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


def _argv_from(stdout):
    lines = stdout.splitlines()
    return lines[lines.index("ARGV") + 1 :]


def _command_of(argv):
    [cmd] = [a for a in argv if a.startswith("--command=")]
    return cmd[len("--command=") :]


# --- pod ----------------------------------------------------------------------------------------


def test_pod_gcloud_argv():
    args, rest = pod.parser().parse_known_args([*POD, "--workdir=/mnt/runs/a"])
    argv = pod.build(args, rest)
    assert argv[:7] == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        "my-pod",
        "--zone=us-central2-b",
    ]
    assert "--project=proj" in argv and "--worker=all" in argv
    assert _command_of(argv) == (
        'cd "$HOME"/lmrl && python3 -m launch.main --config=configs/spg.py:tiny '
        "--workdir=/mnt/runs/a --multihost"
    )


def test_pod_dry_run_prints_and_runs_nothing(capsys):
    calls = []
    rc = pod.main([*POD, "--workdir=/mnt/r", "--dry_run"], run=lambda *a, **k: calls.append(a))
    assert rc == 0 and calls == []
    printed = capsys.readouterr().out.strip()
    argv = shlex.split(printed)
    assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
    assert "--multihost" in _command_of(argv)


def test_pod_dry_run_cli_subprocess():
    """`python -m launch.pod --dry_run` with no gcloud on PATH still prints the command."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    out = subprocess.run(
        [sys.executable, "-m", "launch.pod", *POD, "--workdir=/mnt/r", "--dry_run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("gcloud compute tpus tpu-vm ssh my-pod ")


def test_pod_without_dry_run_calls_the_runner_with_the_printed_argv(monkeypatch, capsys):
    monkeypatch.setattr(pod.shutil, "which", lambda name: "/usr/bin/" + name)
    calls = []

    class Done:
        returncode = 7

    def fake_run(argv, check):
        calls.append(argv)
        return Done()

    rc = pod.main([*POD, "--workdir=/mnt/r"], run=fake_run)
    assert rc == 7 and len(calls) == 1
    assert shlex.split(capsys.readouterr().out.strip()) == calls[0]


def test_pod_without_gcloud_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(pod.shutil, "which", lambda name: None)
    rc = pod.main([*POD, "--workdir=/mnt/r"], run=lambda *a, **k: pytest.fail("ran"))
    assert rc == 2 and "gcloud is not on PATH" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad", [["--workdir=gs://bucket/run"], ["--workdir=/r", "--bogus=1"], ["--workdir=/r", "x"]]
)
def test_pod_rejects_bad_input(bad, capsys):
    rc = pod.main([*POD, *bad, "--dry_run"], run=lambda *a, **k: pytest.fail("ran"))
    assert rc == 2 and capsys.readouterr().err.startswith("error:")


def test_pod_env_must_be_key_value():
    with pytest.raises(ValueError, match="KEY=VALUE"):
        pod.remote_command(config="c", workdir="w", env=["NOEQUALS"])


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_pod_remote_command_runs_with_exact_argv(tmp_path):
    """The remote command, run by a shell, reaches python with each argument intact."""
    home = tmp_path / "home"
    (home / "my repo").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "python3")
    args, rest = pod.parser().parse_known_args(
        [
            *POD[:3],
            "--config=configs/spg.py:task=countdown,tiny",
            "--workdir=/mnt/runs/it's here",
            "--repo_dir=~/my repo",
            "--setup=export FOO=1",
            "--env=XLA_FLAGS=--xla_a=1 --xla_b=2",
            '--config.rl.init_weights=/ckpt/"x"',
        ]
    )
    command = _command_of(pod.build(args, rest))
    env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    out = subprocess.run(
        [BASH, "-c", command + ' && printf "%s\\n" "$PWD"'],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    argv = _argv_from(out.stdout)
    assert argv[-1] == str(home / "my repo")  # the cd happened
    assert argv[:-1] == [
        "-m",
        "launch.main",
        "--config=configs/spg.py:task=countdown,tiny",
        "--workdir=/mnt/runs/it's here",
        "--multihost",
        '--config.rl.init_weights=/ckpt/"x"',
    ]


# --- slurm --------------------------------------------------------------------------------------


def _directives(script):
    return dict(
        ln[len("#SBATCH --") :].split("=", 1)
        for ln in script.splitlines()
        if ln.startswith("#SBATCH --")
    )


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_slurm_template_is_valid_shell():
    out = subprocess.run([BASH, "-n", slurm.TEMPLATE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_slurm_fill_sets_one_task_per_gpu():
    script = slurm.fill(
        nodes=4,
        gpus_per_node=8,
        config="configs/spg.py:llada8b",
        workdir="/shared/runs/x",
        partition="gpu",
        time="1-00:00:00",
    )
    d = _directives(script)
    assert d["nodes"] == "4" and d["gpus-per-node"] == "8" and d["ntasks-per-node"] == "8"
    assert d["partition"] == "gpu" and d["time"] == "1-00:00:00"
    assert "account" not in d
    assert script.startswith("#!/bin/bash\n")
    # every directive precedes the first command, or sbatch ignores it
    lines = script.splitlines()
    first_cmd = next(i for i, ln in enumerate(lines) if ln and not ln.startswith("#"))
    assert max(i for i, ln in enumerate(lines) if ln.startswith("#SBATCH")) < first_cmd
    assert "CONFIG=configs/spg.py:llada8b" in lines
    assert "srun" in script and "--multihost" in script


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_slurm_filled_script_runs_srun_with_exact_argv(tmp_path):
    """bash -n on the filled script, then run it with a stub srun: the argv arrives intact."""
    workdir = tmp_path / "runs" / "it's a run"
    script = slurm.fill(
        nodes=2,
        gpus_per_node=4,
        config="configs/spg.py:task=countdown,tiny",
        workdir=str(workdir),
        python="/opt/venv/bin/python",
        overrides=["--config.rl.steps=3", "--config.note=two words"],
    )
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    check = subprocess.run([BASH, "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "srun")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_SUBMIT_DIR": str(tmp_path)}
    out = subprocess.run([BASH, str(path)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert _argv_from(out.stdout) == [
        "--kill-on-bad-exit=1",
        "/opt/venv/bin/python",
        "-m",
        "launch.main",
        "--config=configs/spg.py:task=countdown,tiny",
        f"--workdir={workdir}",
        "--multihost",
        "--config.rl.steps=3",
        "--config.note=two words",
    ]


def test_slurm_dry_run_prints_script_and_submits_nothing(tmp_path, capsys):
    out_file = tmp_path / "job.sbatch"
    rc = slurm.main(
        ["--nodes=2", "--config=configs/spg.py", "--workdir=/w", f"--out={out_file}", "--dry_run"],
        run=lambda *a, **k: pytest.fail("submitted"),
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.startswith("#!/bin/bash") and _directives(printed)["nodes"] == "2"
    assert out_file.read_text() in printed


def test_slurm_submits_the_script_on_stdin(monkeypatch):
    monkeypatch.setattr(slurm.shutil, "which", lambda name: "/usr/bin/" + name)
    calls = []

    class Done:
        returncode = 0

    def fake_run(argv, **kw):
        calls.append((argv, kw))
        return Done()

    rc = slurm.main(["--config=configs/spg.py", "--workdir=/w"], run=fake_run)
    assert rc == 0 and calls[0][0] == ["sbatch"]
    assert calls[0][1]["input"].startswith("#!/bin/bash")


@pytest.mark.parametrize(
    "kw",
    [dict(nodes=0), dict(time="4h"), dict(partition="gpu large"), dict(job_name="a#b")],
)
def test_slurm_rejects_bad_values(kw):
    base = dict(nodes=1, gpus_per_node=1, config="c", workdir="w")
    with pytest.raises(ValueError):
        slurm.fill(**{**base, **kw})


_STEP_ENV = {  # what srun sets for a one-node, one-task step
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_NODELIST": "localhost",
    "SLURM_NTASKS": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
}


def test_jax_auto_detects_the_slurm_step():
    """The template passes no addresses: jax.distributed.initialize() must find them in SLURM_*."""
    code = (
        "import jax; jax.distributed.initialize(); "
        "print(jax.process_count(), jax.process_index()); jax.distributed.shutdown()"
    )
    env = {**os.environ, **_STEP_ENV, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "0"]


@pytest.mark.slow
@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_slurm_script_runs_launch_main_end_to_end(tmp_path):
    """The filled script, with an srun that runs one local task, trains configs/sft.py:tiny."""
    workdir = tmp_path / "run"
    script = slurm.fill(
        nodes=1,
        gpus_per_node=1,
        config="configs/sft.py:tiny",
        workdir=str(workdir),
        python=sys.executable,
    )
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    exports = " ".join(f"{k}={v}" for k, v in _STEP_ENV.items())
    srun.write_text(f'#!/bin/sh\nshift\nexport {exports}\nexec "$@"\n')
    srun.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "SLURM_SUBMIT_DIR": ROOT,
        "JAX_PLATFORMS": "cpu",
        "LMRL_NO_PROGRESS": "1",
    }
    out = subprocess.run([BASH, str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (workdir / "result.json").exists() and (workdir / "config.json").exists()
