"""launch/tpu_pod.sh against a stand-in ``gcloud`` that runs each worker's commands locally.

The stand-in records every call and runs each ``--command`` in one folder per worker (its home),
with ``python3.11``/``python3.12`` shims that make a venv whose python records what it is asked
to do; so the test sees what a 2-worker pod would get and in which order.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = 2
OVERRIDES = ["--config.model.name=it's $HOME", "--config.augment.crop_scale=(0.2, 1.0)"]

GCLOUD = textwrap.dedent(
    f"""\
    #!{sys.executable}
    import json, os, shutil, subprocess, sys
    args = sys.argv[1:]
    with open(os.environ["GCLOUD_RECORD"], "a") as f:
        f.write(json.dumps(args) + "\\n")
    assert args[:3] == ["compute", "tpus", "tpu-vm"] and "--worker=all" in args, args
    workers = os.environ["GCLOUD_WORKERS"].split(os.pathsep)
    if args[3] == "ssh":
        (command,) = [a[len("--command="):] for a in args if a.startswith("--command=")]
        for home in workers:
            env = dict(os.environ, HOME=home, PATH=os.environ["SHIMS"] + ":" + os.environ["PATH"])
            code = subprocess.run(["bash", "-c", command], cwd=home, env=env).returncode
            if code:
                sys.exit(code)
    elif args[3] == "scp":
        sources = [a for a in args[5:] if ":" not in a and not a.startswith("--")]
        (target,) = [a.split(":", 1)[1] for a in args if ":" in a and not a.startswith("--")]
        for home in workers:
            dest = os.path.join(home, target)
            if not os.path.isdir(dest):  # scp of several sources into a missing folder fails
                sys.exit(f"scp: {{dest}}: No such file or directory")
            for source in sources:
                name = os.path.basename(source.rstrip("/"))
                if os.path.isdir(source):
                    shutil.copytree(source, os.path.join(dest, name), dirs_exist_ok=True)
                else:
                    shutil.copy(source, dest)
    else:
        sys.exit(f"stand-in gcloud: unexpected {{args}}")
    """
)

# python3.11 -m venv DIR: a venv whose python records each call (pip, ssl_jax.main) in its
# worker's calls.jsonl; "training" runs until SIGTERM, which it answers like a preempted job.
PYTHON_SHIM = textwrap.dedent(
    """\
    #!/usr/bin/env bash
    record() { printf '%s\\n' "$1" >> "$HOME/calls.jsonl"; }
    if [ "$1 $2" = "-m venv" ]; then
      mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
      record "venv $3"
      exit 0
    fi
    if [ "$1 $2" = "-m pip" ]; then
      record "pip ${*:3}"
      exit 0
    fi
    if [ "$1 $2" = "-m ssl_jax.main" ]; then
      record "train TFDS_DATA_DIR=${TFDS_DATA_DIR:-} ${*:3}"
      printf '%s\\0' "${@:3}" > "$HOME/train_args"
      trap 'echo "saved on SIGTERM"; exit 0' TERM
      echo "training"
      for _ in $(seq 600); do sleep 0.1; done
      echo "finished"
      exit 0
    fi
    echo "python shim: unexpected $*" >&2
    exit 1
    """
)


def wait_for(predicate, timeout_s=20):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_tpu_pod_makes_the_folder_venv_then_starts_detached_and_stops(tmp_path):
    bin_dir, shims = tmp_path / "bin", tmp_path / "shims"
    bin_dir.mkdir(), shims.mkdir()
    (bin_dir / "gcloud").write_text(GCLOUD)
    for name in ("python3.11", "python3.12"):
        (shims / name).write_text(PYTHON_SHIM)
    (shims / "sudo").write_text("#!/bin/sh\necho 'sudo was called' >&2\nexit 1\n")
    for path in [bin_dir / "gcloud", *shims.iterdir()]:
        path.chmod(0o755)
    homes = [tmp_path / f"worker{i}" for i in range(WORKERS)]
    for home in homes:
        home.mkdir()
    record = tmp_path / "gcloud.jsonl"
    env = dict(
        os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SHIMS=str(shims),
        GCLOUD_RECORD=str(record), GCLOUD_WORKERS=os.pathsep.join(map(str, homes)),
        WORKDIR="gs://b/r 1", TFDS_DATA_DIR="gs://b/tfds",
    )  # fmt: skip

    def launcher(*args):
        result = subprocess.run(
            ["bash", "launch/tpu_pod.sh", *args], cwd=REPO, env=env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    config = "configs/simclr_imagenet.py:runlocal"
    launcher("pod-1", "us-central2-b", config, *OVERRIDES)
    try:
        calls = [json.loads(line) for line in record.read_text().splitlines()]
        commands = [next((a for a in c if a.startswith("--command=")), c[3]) for c in calls]
        assert commands[0] == "--command=mkdir -p ssl_jax" and commands[1] == "scp"
        assert "venv" in commands[2] and "setsid nohup" in commands[3] and len(calls) == 4
        for home in homes:
            # The ssh session has returned; the job runs on, detached, logging per worker.
            assert wait_for(lambda h=home: "training" in (h / "ssl_jax/train.log").read_text())
            assert "finished" not in (home / "ssl_jax/train.log").read_text()
            steps = [line.split()[0] for line in (home / "calls.jsonl").read_text().splitlines()]
            assert steps == ["venv", "pip", "pip", "pip", "train"]
            pips = (home / "calls.jsonl").read_text().splitlines()[1:4]
            assert "-r requirements.txt jax[tpu]==" in pips[1] and "pytest" not in " ".join(pips)
            assert "TFDS_DATA_DIR=gs://b/tfds " in (home / "calls.jsonl").read_text()
            args = (home / "train_args").read_text().split("\0")[:-1]
            assert args == [f"--config={config}", "--workdir=gs://b/r 1", *OVERRIDES]
            assert (home / "ssl_jax/configs").is_dir() and (home / "ssl_jax/ssl_jax").is_dir()

        logs = launcher("--logs", "pod-1", "us-central2-b")
        assert logs.count("training") == WORKERS
    finally:
        launcher("--stop", "pod-1", "us-central2-b")
    for home in homes:
        log = home / "ssl_jax/train.log"
        assert wait_for(lambda log=log: "saved on SIGTERM" in log.read_text()), log.read_text()
    assert "kill -TERM" in json.loads(record.read_text().splitlines()[-1])[-1]
