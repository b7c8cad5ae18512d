"""``python -m MODULE ARGS`` for many commands at the cost of one: a process imports ssl_jax once
(~10 s on two cores) and forks a child per command that runs MODULE as ``__main__``.

Each child does what the interpreter does for ``python -m``: ``runpy.run_module(...,
run_name="__main__", alter_sys=True)``; ``SystemExit(None | int | message)`` becomes its exit
status (a message printed to stderr, status 1) and any other exception a traceback and status 1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_commands(
    commands: list[list[str]], timeout: float = 600, command_timeout: int = 60
) -> list[Result]:
    """``[[module, *args], ...]`` run from the repository root, in order; one Result each.

    A command still running after ``command_timeout`` seconds is killed (returncode -14), so a
    check that stops nothing costs a minute, not a training run.
    """
    completed = subprocess.run(
        [sys.executable, os.path.abspath(__file__), json.dumps(commands), str(command_timeout)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"entry point driver failed:\n{completed.stderr[-4000:]}")
    return [Result(**result) for result in json.loads(completed.stdout.splitlines()[-1])]


def _run_as_main(module: str, args: list[str]) -> int:
    import runpy
    import traceback

    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - what the interpreter would print
        traceback.print_exc()
        return 1
    return 0


def _drive(commands: list[list[str]], command_timeout: int) -> list[dict]:
    sys.path.insert(0, REPO)  # as `python -m` from the repository root: ssl_jax, configs
    # What every entry point imports (TensorFlow, tfds, clu, the trainer), once, shared by the
    # forks: `import ssl_jax` alone loads them lazily, which would cost each child ~10 s. Not the
    # entry-point modules themselves: each child runs one as __main__ and defines its flags.
    import tensorflow_datasets  # noqa: F401
    from clu import metric_writers  # noqa: F401

    import ssl_jax.evaluation.linear  # noqa: F401
    import ssl_jax.text.data  # noqa: F401
    import ssl_jax.train  # noqa: F401
    import ssl_jax.vision.data  # noqa: F401

    scratch = tempfile.mkdtemp(prefix="entry_points_")
    results = []
    for index, (module, *args) in enumerate(commands):
        out, err = (os.path.join(scratch, f"{index}.{kind}") for kind in ("out", "err"))
        pid = os.fork()
        if pid == 0:
            signal.alarm(command_timeout)  # SIGALRM's default action ends the child
            with open(out, "w") as stdout, open(err, "w") as stderr:
                os.dup2(stdout.fileno(), 1)
                os.dup2(stderr.fileno(), 2)
                code = _run_as_main(module, args)
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        with open(out) as stdout, open(err) as stderr:
            results.append(
                dict(
                    returncode=os.waitstatus_to_exitcode(status),
                    stdout=stdout.read(),
                    stderr=stderr.read(),
                )
            )
    return results


if __name__ == "__main__":
    print(json.dumps(_drive(json.loads(sys.argv[1]), int(sys.argv[2]))))
