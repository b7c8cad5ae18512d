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
from clu import periodic_actions

from ssl_jax import checkpoint, parallel


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


class StepLogger:
    """Writes step metrics with learning rate, throughput and ETA; returns the loss."""

    def __init__(self, writer, schedule, batch_size: int, total_steps: int, start_step: int):
        self.writer, self.schedule = writer, schedule
        self.batch_size, self.total_steps = batch_size, total_steps
        self.last = (time.perf_counter(), start_step)

    def __call__(self, step: int, metrics: dict[str, float]) -> float:
        now = time.perf_counter()
        steps_per_sec = (step - self.last[1]) / (now - self.last[0])
        self.last = (now, step)
        scalars = dict(
            metrics,
            learning_rate=float(self.schedule(step - 1)),
            examples_per_sec=steps_per_sec * self.batch_size,
        )
        self.writer.write_scalars(step, scalars)
        eta = time.strftime("%H:%M:%S", time.gmtime((self.total_steps - step) / steps_per_sec))
        probe = f"  probe top-1 {scalars['probe_top1']:.3f}" if "probe_top1" in scalars else ""
        logging.info(
            "step %d/%d  loss %.4f%s  %.2f steps/s  %.0f examples/s  ETA %s",
            step, self.total_steps, scalars["loss"], probe, steps_per_sec,
            scalars["examples_per_sec"], eta,
        )  # fmt: skip
        return scalars["loss"]


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

    def __call__(self, state, start_step: int, guard, *, baselines) -> dict[str, Any]:
        config, results = self.config, {}
        progress = periodic_actions.ReportProgress(
            num_train_steps=self.total_steps, writer=self.writer
        )
        # The first step compiles; tracing from the second shows the steady state.
        profile = range(start_step + 2, start_step + 2 + config.get("profile_steps", 0))
        try:
            for step in range(start_step + 1, self.total_steps + 1):
                if step in profile and step == profile.start:
                    jax.profiler.start_trace(os.path.join(self.checkpoints.workdir, "profile"))
                state, metrics = self.step_fn(
                    state, parallel.to_global(next(self.batches), self.mesh)
                )
                if step in profile and (step == profile.stop - 1 or step == self.total_steps):
                    jax.block_until_ready(state)
                    jax.profiler.stop_trace()
                    logging.info("profile of steps %d-%d written", profile.start, step)
                progress(step)
                preempted = guard.should_stop(step, config.log_every_steps)
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
