"""The step loop of a run: step, log, check finiteness, checkpoint, evaluate, stop when asked.

``train.run`` builds the pieces (state, step function, data, checkpointer, monitor) and hands
them to ``Loop``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from ssl_jax.core import checkpoint, parallel, storage


def check_finite(metrics: dict[str, Any], step: int) -> dict[str, float]:
    """Host metrics; raises unless they and the new state are finite, or the step was skipped."""
    metrics = {name: float(value) for name, value in metrics.items()}
    if metrics.get("step_skipped"):
        logging.warning("step %d: non-finite gradient, step skipped", step)
    elif not all(math.isfinite(value) for value in metrics.values()):
        raise FloatingPointError(
            f"non-finite metrics at step {step}: {metrics}; lower learning_rate, check the data, "
            "or let --config.skip_nonfinite_steps=K skip up to K such steps in a row."
        )
    elif metrics.get("nonfinite_state_arrays"):
        raise FloatingPointError(
            f"step {step} made {metrics['nonfinite_state_arrays']:.0f} arrays of the state "
            "non-finite (the update overflowed; loss and gradient were finite); lower "
            "learning_rate or check lr_scaling. The newest checkpoint is the last finite state."
        )
    return metrics


def format_duration(seconds: float) -> str:
    """``[Nd ]HH:MM:SS``: runs of more than a day keep their days."""
    days, rest = divmod(int(round(seconds)), 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


class StepLogger:
    """The one progress reporter: step metrics with learning rate, throughput and ETA.

    Throughput and ETA count from ``started`` (called once the first step, which compiles, is
    done), so they describe the steady state. Only process 0 prints; every process writes the
    scalars its writer keeps (process 0's writes event files, the others' only log).
    """

    def __init__(self, writer, schedule, batch_size: int, total_steps: int, start_step: int):
        self.writer, self.schedule = writer, schedule
        self.batch_size, self.total_steps = batch_size, total_steps
        self.last = (time.perf_counter(), start_step)

    def started(self, step: int) -> None:
        self.last = (time.perf_counter(), step)

    def __call__(self, step: int, metrics: dict[str, float]) -> float:
        now = time.perf_counter()
        elapsed, steps = now - self.last[0], step - self.last[1]
        steps_per_sec = steps / elapsed if steps > 0 and elapsed > 0 else float("nan")
        if steps > 0:
            self.last = (now, step)
        scalars = dict(metrics, learning_rate=float(self.schedule(step - 1)))
        if math.isfinite(steps_per_sec):
            scalars["examples_per_sec"] = steps_per_sec * self.batch_size
            scalars["steps_per_sec"] = steps_per_sec
        self.writer.write_scalars(step, scalars)
        if jax.process_index() == 0:
            if math.isfinite(steps_per_sec):
                eta = format_duration((self.total_steps - step) / steps_per_sec)
                speed = f"{steps_per_sec:.2f} steps/s  {scalars['examples_per_sec']:.0f} examples/s"
            else:  # the compiling first step: no rate yet
                eta, speed = "-", "compiled"
            probe = f"  probe top-1 {scalars['probe_top1']:.3f}" if "probe_top1" in scalars else ""
            logging.info(
                "step %d/%d  loss %.4f%s  %s  ETA %s",
                step, self.total_steps, scalars["loss"], probe, speed, eta,
            )  # fmt: skip
        return scalars["loss"]


class ProcessLogs:
    """Every log line of this process, also in ``WORKDIR/logs/process_<i>.log``.

    The console keeps what it shows today (process 0 alone prints step lines); the file holds
    each process's full log, reaching an object store at each ``sync`` and at ``close``.
    """

    _active: ProcessLogs | None = None

    def __init__(self, workdir: str):
        if ProcessLogs._active is not None:  # a run in this process that raised before close
            ProcessLogs._active.close()
        ProcessLogs._active = self
        self.mirror = storage.Mirror(os.path.join(workdir, "logs"))
        path = os.path.join(self.mirror.local, f"process_{jax.process_index()}.log")
        self._handler = logging.logging.FileHandler(path)
        self._handler.setFormatter(logging.PythonFormatter())
        self._handler.setLevel(logging.logging.INFO)
        logging.logging.getLogger().addHandler(self._handler)

    def sync(self) -> None:
        self._handler.flush()
        self.mirror.sync()

    def close(self) -> None:
        if ProcessLogs._active is self:
            ProcessLogs._active = None
        logging.logging.getLogger().removeHandler(self._handler)
        self._handler.close()
        self.mirror.close()


def report_eval(writer, step: int, metrics: dict[str, float], baselines: dict[str, float]):
    writer.write_scalars(step, metrics)
    shown = "  ".join(f"{name} {value:.4f}" for name, value in {**metrics, **baselines}.items())
    logging.info("step %d evaluation: %s", step, shown)


@dataclasses.dataclass
class Loop:
    """The pieces the step loop drives; calling it trains and returns the new results."""

    config: ml_collections.ConfigDict
    mesh: Any
    total_steps: int
    step_fn: Any
    batches: Iterator[dict[str, np.ndarray]]
    checkpoints: checkpoint.Checkpointer
    evaluate: Any
    writer: Any
    logger: Any
    logs: ProcessLogs | None = None

    def __call__(self, state, start_step: int, guard, *, baselines) -> dict[str, Any]:
        config, results = self.config, {}
        # The first step compiles; tracing from the second shows the steady state.
        profile = range(start_step + 2, start_step + 2 + config.get("profile_steps", 0))
        if len(profile):
            self._profile_dir = storage.Mirror(os.path.join(self.checkpoints.workdir, "profile"))
        try:
            for step in range(start_step + 1, self.total_steps + 1):
                if step in profile and step == profile.start:
                    jax.profiler.start_trace(self._profile_dir.local)
                state, metrics = self.step_fn(
                    state, parallel.to_global(next(self.batches), self.mesh)
                )
                if step in profile and (step == profile.stop - 1 or step == self.total_steps):
                    jax.block_until_ready(state)
                    jax.profiler.stop_trace()
                    self._profile_dir.close()
                    logging.info("profile of steps %d-%d written", profile.start, step)
                if step == start_step + 1:
                    # Once, so that throughput and ETA leave the compilation out.
                    jax.block_until_ready(metrics)
                    self.logger.started(step)
                preempted = guard.should_stop(step)
                is_last = step == self.total_steps
                should_save = preempted or is_last or step % config.checkpoint_every_steps == 0
                if step % config.log_every_steps == 0 or should_save:
                    # Checked before every save: a diverged state never replaces a good checkpoint.
                    metrics = check_finite(jax.device_get(metrics), step)
                if step % config.log_every_steps == 0 or is_last or preempted:
                    skipped = getattr(self.batches, "skipped_examples", 0)
                    if skipped:
                        metrics["input_skipped_examples"] = float(skipped)
                    results["loss"] = self.logger(step, metrics)
                if should_save:
                    self.checkpoints.save(step, state)
                    self.writer.flush()  # on an object store this starts the events' upload
                    if self.logs is not None:
                        self.logs.sync()
                if preempted:
                    logging.warning(
                        "stopped at step %d on request; checkpoint saved, rerun the same command "
                        "to continue",
                        step,
                    )
                    results["preempted_at_step"] = step
                    return results
                if is_last or step % config.eval_every_steps == 0:
                    evaluated = self.evaluate(state)
                    results.update(evaluated)
                    report_eval(self.writer, step, evaluated, baselines)
            if start_step >= self.total_steps:  # resumed a run that had already finished
                results.update(self.evaluate(state))
        finally:
            # Pending asynchronous saves complete even when the loop fails.
            self.checkpoints.close()
        return results
