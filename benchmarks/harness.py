"""What every benchmark shares: machine facts, worker processes driven A/B, medians, JSON output.

Imports neither jax nor torch, so each side's worker (ssl_jax's venv or the torch venv) loads it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Worker replies start with this tag, so library chatter on stdout cannot be mistaken for one.
_TAG = "@@bench "


def machine() -> dict[str, Any]:
    """CPU model, core count, date and Python: the context a number needs to be read."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def torch_python() -> str:
    """The torch venv's interpreter: $TORCH_PYTHON, or whatever ``torch_env.sh`` creates."""
    if os.environ.get("TORCH_PYTHON"):
        return os.environ["TORCH_PYTHON"]
    script = Path(__file__).resolve().parent / "torch_env.sh"
    result = subprocess.run(["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True)
    return result.stdout.strip().splitlines()[-1]


def jax_python() -> str:
    return os.environ.get("JAX_PYTHON", sys.executable)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def peak_rss_bytes() -> int:
    """This process's resident-set high-water mark (VmHWM), reset by ``reset_peak_rss``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmRSS in /proc/self/status")


def reset_peak_rss() -> None:
    """Sets VmHWM back to the current RSS (Linux clear_refs 5): a later peak is this run's."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def serve(setup: Callable[[dict[str, Any]], tuple[dict[str, Any], Callable[[], dict]]]) -> None:
    """Worker main loop: ``setup(args)`` once (build, compile, warm up), then one round per request.

    Reads JSON requests from stdin and answers each with one tagged JSON line on stdout; a
    request ``{"round": ...}`` runs the timed round, ``{"quit": true}`` ends the worker.
    """
    args = json.loads(sys.stdin.readline())
    info, run_round = setup(args)
    print(_TAG + json.dumps(info), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        print(_TAG + json.dumps(run_round()), flush=True)


class Worker:
    """One side of a benchmark, alive in its own process between rounds (compiled once)."""

    def __init__(self, python: str, script: str, side: str, args: dict[str, Any], env=None):
        self.side = side
        self.process = subprocess.Popen(
            [python, script, f"--worker={side}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            # Both sides may share one GPU: JAX must not take most of its memory up front.
            env={**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", **(env or {})},
            cwd=REPO,
        )
        self.info = self._ask(args)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(_TAG):
                return json.loads(line[len(_TAG) :])
            sys.stderr.write(line)
        raise RuntimeError(f"{self.side} worker exited with {self.process.wait()}")

    def round(self) -> dict[str, Any]:
        return self._ask({"round": True})

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({"quit": True}) + "\n")
            self.process.stdin.close()
            self.process.wait()


def alternate(workers: Sequence[Worker], rounds: int, pause_s: float = 0.5) -> list[list[dict]]:
    """Runs ``rounds`` rounds of A, B, A, B ...; returns each worker's list of round results.

    The pause lets one side's threads go idle before the other side's clock starts. The workers
    are closed afterwards, also when a round fails; their ``info`` stays readable.
    """
    results: list[list[dict]] = [[] for _ in workers]
    try:
        for _ in range(rounds):
            for worker, out in zip(workers, results, strict=True):
                time.sleep(pause_s)
                out.append(worker.round())
    finally:
        for worker in workers:
            worker.close()
    return results


def jax_step_timer(compiled: Callable, state: Any, batch: Any) -> Callable[[int], float]:
    """``seconds_per_step(n)``: runs the compiled train step n times from the carried state.

    One untimed step runs first (first-run allocations).
    """
    import jax

    holder = {"state": state}

    def seconds_per_step(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready((holder["state"], metrics))
        return (time.perf_counter() - start) / n

    seconds_per_step(1)
    return seconds_per_step


def run_once(python: str, script: str, side: str, args: dict[str, Any], env=None) -> dict:
    """A fresh process for one measurement (so its peak memory is its own), then gone."""
    worker = Worker(python, script, side, args, env)
    try:
        return {**worker.info, **worker.round()}
    finally:
        worker.close()


def emit(record: dict[str, Any]) -> None:
    """The benchmark's one JSON line, with the machine it ran on."""
    print(json.dumps({**record, "machine": machine()}), flush=True)
