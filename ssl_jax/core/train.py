"""The one training loop: validate, init or resume, step on the mesh, log, evaluate, checkpoint.

The method (``Method`` and its module's ``make`` / ``validate``) and the modality (``Task``) come
in as arguments; nothing here knows which method runs or on what kind of data.
``ssl_jax.train`` plugs in the registered ones.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from etils import epy
from jax import lax
from jax.sharding import PartitionSpec as P

from ssl_jax.core import checkpoint, optim, parallel, preemption
from ssl_jax.core import probe as probe_lib
from ssl_jax.core.method import LossAux, Method
from ssl_jax.core.state import TrainState
from ssl_jax.core.task import Task

with epy.lazy_imports():
    import ml_collections

    from ssl_jax.core import loop as loop_lib
    from ssl_jax.core import storage
    from ssl_jax.core import workdir as workdir_lib


class ConfigError(ValueError):
    """A config that cannot run; the message says in one line what to change."""


def validate_config(
    config: ml_collections.ConfigDict,
    device_count: int,
    *,
    method_module: Any,
    task: Task,
    field_problem: Callable[[Any], str | None] | None = None,
) -> None:
    """Checks everything that would otherwise fail after compiling, before anything is written.

    ``device_count`` is the size of the mesh the batch is split over (``mesh.size``): per-device
    facts are checked against ``batch_size // device_count``. ``field_problem`` names a field out
    of its range (``ssl_jax.config_checks.problem``); ``method_module.validate`` and
    ``task.problem`` check what needs the method's and the data's own knowledge.
    """
    if config.batch_size <= 0 or config.batch_size % device_count:
        raise ConfigError(
            f"batch_size={config.batch_size} must be a positive multiple of the "
            f"{device_count} devices; set --config.batch_size to e.g. "
            f"{max(1, round(config.batch_size / device_count)) * device_count}."
        )
    if config.get("parallelism", "shard_map") not in ("shard_map", "pmap"):
        raise ConfigError(
            f"parallelism={config.parallelism!r}: use 'shard_map' (default) or 'pmap'."
        )
    problem = field_problem(config) if field_problem is not None else None
    if problem:
        raise ConfigError(problem)
    try:
        method_module.validate(config, config.batch_size, device_count)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    missing = task.problem(config)
    if missing:
        raise ConfigError(missing)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    method: Method,
    tx: optax.GradientTransformation,
    axis_name: str | None = parallel.DATA_AXIS,
    probe: probe_lib.OnlineProbe | None = None,
    skip_nonfinite: int = 0,
    reduce_grads: Callable[[Any], Any] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step, written per device (collectives over ``axis_name``).

    Randomness is ``fold_in(state.rng, state.step)``: a function of the seed and step only.
    The method's loss is the global one, so under shard_map its gradient with respect to the
    replicated parameters is already the global gradient; ``reduce_grads`` is what another
    driver needs on top (``parallel.pmap_replicated_grads`` under pmap), applied to the
    method's and the probe's gradients.
    With a ``probe``, the features the method's loss hands over train it in the same step, by a
    gradient of its own: the encoder's gradient is the same with or without it.
    With ``skip_nonfinite`` = k > 0, ``tx`` runs inside ``optax.apply_if_finite(tx, k)`` (the
    state must come from ``create_state(..., skip_nonfinite=k)``): a step whose gradient is not
    finite changes nothing but the step count and the optimiser's counters, up to k in a row;
    metrics then carry ``step_skipped`` and ``skipped_steps`` (the total).
    """
    if skip_nonfinite:
        tx = guarded_optimizer(tx, skip_nonfinite)
        if not isinstance(state.opt_state, optax.ApplyIfFiniteState):
            raise ValueError(
                f"train_step(skip_nonfinite={skip_nonfinite}) needs the optimiser state of "
                f"create_state(..., skip_nonfinite={skip_nonfinite}); got "
                f"{type(state.opt_state).__name__}."
            )
    old_state = state
    rng = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.value_and_grad(method.loss, has_aux=True)
    (_, aux), grads = grad_fn(state.params, state, batch, rng, axis_name)
    mutated, metrics, features = LossAux(*aux)
    mutated = dict(mutated)
    if reduce_grads is not None:
        grads = reduce_grads(grads)
    if axis_name is not None:
        # Losses are global already; a method's per-device diagnostics become global too.
        metrics = lax.pmean(metrics, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
    if probe is not None and features is not None:
        probe_state, probe_metrics = probe.update(
            state.probe, features, batch["label"], axis_name, reduce_grads=reduce_grads
        )
        mutated["probe"] = probe_state
        metrics.update(probe_metrics)
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, **mutated)
    state = method.after_update(state)
    if skip_nonfinite:
        skipped = ~opt_state.last_finite & (opt_state.notfinite_count <= skip_nonfinite)
        kept = old_state.replace(step=state.step, opt_state=state.opt_state)
        state = jax.tree.map(lambda old, new: jnp.where(skipped, old, new), kept, state)
        metrics["step_skipped"] = skipped.astype(jnp.float32)
        metrics["skipped_steps"] = opt_state.total_notfinite.astype(jnp.float32)
    # Finite loss and gradient do not make a finite update (an overflowing step): what would be
    # saved is checked too, here where it costs one pass over the state instead of a host copy.
    metrics["nonfinite_state_arrays"] = nonfinite_arrays(
        (state.params, state.opt_state, state.batch_stats, state.extra, state.probe)
    )
    return state, metrics


def nonfinite_arrays(tree) -> jax.Array:
    """How many floating-point arrays of ``tree`` hold a NaN or an infinity (float32 scalar)."""
    flags = [
        jnp.any(~jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    return jnp.sum(jnp.stack(flags)).astype(jnp.float32) if flags else jnp.zeros((), jnp.float32)


def guarded_optimizer(
    tx: optax.GradientTransformation, skip_nonfinite: int
) -> optax.GradientTransformation:
    """``tx`` behind ``optax.apply_if_finite``, which counts non-finite gradients in its state.

    The count lives in the optimiser state, so a resumed run keeps it; on such a step the inner
    state is left untouched and ``train_step`` keeps the rest of the old state.
    """
    return optax.apply_if_finite(tx, max_consecutive_errors=skip_nonfinite)


def make_train_step(
    method: Method,
    tx: optax.GradientTransformation,
    mesh,
    parallelism: str = "shard_map",
    probe: probe_lib.OnlineProbe | None = None,
    skip_nonfinite: int = 0,
) -> Any:
    """``(state, global batch) -> (state, metrics)`` over ``mesh``; the state is donated.

    ``parallelism`` picks the driver of the one per-device body: ``"shard_map"`` (jit +
    shard_map) or ``"pmap"``; both take and return the same global arrays. ``probe`` (the same
    one given to ``create_state``) adds the online linear probe; ``skip_nonfinite`` see
    ``train_step`` (give ``create_state`` the same k).

    A method is a bundle of pure functions; here a toy one, ``mean((x @ w)^2)``:

    >>> from ssl_jax import losses
    >>> def loss(params, state, batch, rng, axis_name):
    ...     value = losses.mean_over_devices(jnp.mean((batch["x"] @ params["w"]) ** 2), axis_name)
    ...     return value, ({}, {"loss": value})
    >>> toy = Method("toy", init=lambda rng, batch: {"params": {"w": jnp.ones(3)}},
    ...              loss=loss, encode=None)
    >>> mesh, tx = parallel.make_mesh(), optax.sgd(0.1)
    >>> batch = {"x": np.ones((mesh.size, 3), np.float32)}  # the global batch
    >>> state = create_state(toy, tx, seed=0, sample_batch=batch, mesh=mesh)
    >>> step = make_train_step(toy, tx, mesh)
    >>> state, metrics = step(state, parallel.to_global(batch, mesh))
    >>> float(metrics["loss"]), int(state.step), [round(float(w), 4) for w in state.params["w"]]
    (9.0, 1, [0.4, 0.4, 0.4])
    """
    if parallelism not in ("shard_map", "pmap"):
        raise ValueError(f"parallelism must be 'shard_map' or 'pmap'; got {parallelism!r}.")
    body = functools.partial(
        train_step, method=method, tx=tx, axis_name=parallel.DATA_AXIS, probe=probe,
        skip_nonfinite=skip_nonfinite,
        reduce_grads=parallel.pmap_replicated_grads if parallelism == "pmap" else None,
    )  # fmt: skip
    if parallelism == "pmap":
        return parallel.pmap(body, mesh, donate_argnums=(0,))
    return parallel.shard(
        body, mesh, in_specs=(P(), P(parallel.DATA_AXIS)), out_specs=(P(), P()), donate_argnums=(0,)
    )


def create_state(
    method,
    tx,
    seed: int,
    sample_batch: dict[str, np.ndarray],
    mesh,
    probe: probe_lib.OnlineProbe | None = None,
    skip_nonfinite: int = 0,
) -> TrainState:
    """The initial state, created replicated on ``mesh`` by one jitted init.

    ``skip_nonfinite`` = k > 0 initialises the optimiser state of ``guarded_optimizer(tx, k)``,
    the one ``make_train_step(..., skip_nonfinite=k)`` updates.
    """
    if skip_nonfinite:
        tx = guarded_optimizer(tx, skip_nonfinite)

    def init(rng):
        init_rng, state_rng = jax.random.split(rng)
        variables = method.init(init_rng, sample_batch)
        probe_state = {}
        if probe is not None:
            inputs = sample_batch[method.input_key]
            features = jax.eval_shape(method.encode, variables, inputs)
            probe_state = probe.init(features.shape[-1])
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(variables["params"]),
            rng=state_rng,
            extra=variables.get("extra", {}),
            probe=probe_state,
        )

    return jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.PRNGKey(seed))


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    method_module: Any,
    task: Task,
    field_problem: Callable[[Any], str | None] | None = None,
    report: Callable[..., Any] | None = None,
) -> dict[str, float]:
    """Pretrains as ``config`` says, resuming from ``workdir`` if it holds a checkpoint.

    ``method_module`` provides ``make`` and ``validate``, ``task`` the data and its monitor (see
    ``validate_config``); ``report(workdir, writer=)`` draws the finished run. Returns the final
    metrics (loss and the monitor's scores).
    """
    mesh = parallel.make_mesh()
    validate_config(
        config, mesh.size, method_module=method_module, task=task, field_problem=field_problem
    )
    local_batch_size = config.batch_size // jax.process_count()
    source = task.source(config, local_batch_size)
    total_steps = config.total_steps
    if total_steps is None:
        total_steps = int(config.epochs * source.steps_per_epoch())
    warmup_steps = config.get("warmup_steps") or int(
        config.warmup_epochs * source.steps_per_epoch() if config.warmup_epochs else 0
    )
    if config.total_steps and not config.get("warmup_steps") and warmup_steps >= total_steps:
        # Warm-up in epochs against a fixed run length: an epoch's steps are known from the data.
        raise ConfigError(
            f"warmup_epochs={config.warmup_epochs} is {warmup_steps} steps, not fewer than "
            f"total_steps={total_steps}: the run would end before its warm-up does."
        )
    problem = workdir_lib.check_and_record_config(config, workdir)
    if problem:
        raise ConfigError(problem)
    # On any failure too: the event files and logs reach the workdir (an object store only gets
    # them by upload) and the log handler leaves the root logger.
    with contextlib.ExitStack() as cleanup:
        logs = loop_lib.ProcessLogs(workdir)
        cleanup.callback(logs.close)
        schedule, tx = optim.from_config(config, total_steps, warmup_steps)
        method = method_module.make(
            config, source.image_size, parallel.DATA_AXIS, total_steps=total_steps
        )
        probe = None
        if config.get("probe") and config.probe.enabled and source.num_classes:
            probe = probe_lib.OnlineProbe(
                source.num_classes, optax.adam(config.probe.learning_rate)
            )
        logging.info(
            "process %d/%d, %d local / %d global devices; %d steps, global batch %d",
            jax.process_index(), jax.process_count(), jax.local_device_count(), mesh.size,
            total_steps, config.batch_size,
        )  # fmt: skip

        skip_nonfinite = config.get("skip_nonfinite_steps", 0)
        state = create_state(
            method, tx, config.seed, source.sample_batch, mesh, probe, skip_nonfinite=skip_nonfinite
        )
        checkpoints = checkpoint.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
        try:
            restored = checkpoints.restore_newest_good(checkpoint.abstract_like(state))
        except storage.StorageError as error:
            raise ConfigError(str(error)) from None
        if restored is not None:
            state = restored
            logging.info("resumed from %s at step %d", checkpoints.directory, int(state.step))
        start_step = int(state.step)

        writer = storage.create_writer(workdir, just_logging=jax.process_index() > 0)
        cleanup.callback(writer.close)  # on an object store: uploads and waits
        writer.write_hparams({k: v for k, v in config.items() if not isinstance(v, dict)})
        monitor = source.monitor(mesh, workdir)
        results = monitor.baselines()
        if start_step == 0:
            initial = monitor(method, state)
            loop_lib.report_eval(writer, 0, initial, results)
            results.update({f"{name}_init": value for name, value in initial.items()})

        loop = loop_lib.Loop(
            config=config,
            mesh=mesh,
            total_steps=total_steps,
            step_fn=make_train_step(
                method,
                tx,
                mesh,
                config.get("parallelism", "shard_map"),
                probe,
                skip_nonfinite=skip_nonfinite,
            ),  # fmt: skip
            batches=source.batches(start_step),
            checkpoints=checkpoints,
            evaluate=functools.partial(monitor, method),
            writer=writer,
            logger=loop_lib.StepLogger(
                writer, schedule, config.batch_size, total_steps, start_step
            ),
            logs=logs,
        )
        with preemption.PreemptionGuard() as guard:
            results.update(loop(state, start_step, guard, baselines=dict(results)))
        finished = "preempted_at_step" not in results
        if report is not None and config.get("plots") and jax.process_index() == 0 and finished:
            report(workdir, writer=writer)
        return results
