"""One SimCLR, one MoCo v2 and one BERT MLM training step against references written another way.

The 8-device step (shard_map, global BN, all-gathered NT-Xent, optax LARS) is compared with a
one-device reference that shares only the model's forward pass and the augmentation: NT-Xent
from the full 2N x 2N similarity matrix with the positive of anchor i at i ± N, the reference's
loss_a + loss_b, `jax.grad`, and LARS as google-research/simclr's optimiser writes it (decay
added to the gradient, trust ratio eta * |w| / |g| on kernels only, momentum over the scaled
update), in NumPy. A shared bug in the step, the view pairing or LARS shows as a difference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_train_step import tiny_config

from ssl_jax import train
from ssl_jax.core import optim, parallel
from ssl_jax.methods import simclr
from ssl_jax.vision import augment

# A decay large enough that decaying a bias or BN parameter by mistake moves it well past the
# tolerance, which float rounding between 8 devices and one sets for the BN parameters.
LEARNING_RATE, WEIGHT_DECAY, MOMENTUM, TRUST = 0.5, 0.05, 0.9, 1e-3
IMAGE_SIZE, STEPS = 12, 2


def reference_nt_xent(z1, z2, temperature):
    """loss_a + loss_b: each anchor's cross-entropy over the 2N - 1 other embeddings."""
    z = jnp.concatenate([z1, z2])
    z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    similarity = z @ z.T / temperature
    others = ~jnp.eye(2 * n, dtype=bool)
    log_normaliser = jnp.log(jnp.sum(jnp.where(others, jnp.exp(similarity), 0.0), axis=1))
    positive = similarity[jnp.arange(2 * n), (jnp.arange(2 * n) + n) % (2 * n)]
    return 2.0 * jnp.mean(log_normaliser - positive)


def reference_lars(params, grads, velocity):
    """google-research/simclr's LARS on host arrays; returns (params, velocity)."""
    new_params, new_velocity = {}, {}
    for path, weight in params.items():
        grad = grads[path]
        if path[-1] == "kernel":  # conv and dense kernels; BN scale/bias and biases are left out
            grad = grad + WEIGHT_DECAY * weight
            w_norm, g_norm = np.linalg.norm(weight), np.linalg.norm(grad)
            ratio = TRUST * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
        else:
            ratio = 1.0
        new_velocity[path] = MOMENTUM * velocity[path] + LEARNING_RATE * ratio * grad
        new_params[path] = weight - new_velocity[path]
    return new_params, new_velocity


def flat(tree):
    return {
        tuple(str(getattr(k, "key", k)) for k in path): np.asarray(leaf, np.float64)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def sharded_steps(method, tx, batch, mesh):
    """``STEPS`` steps of the trainer's step on ``mesh``: (initial state, final state, losses)."""
    state = train.create_state(method, tx, 0, batch, mesh)
    initial = jax.device_get(state)
    step_fn = train.make_train_step(method, tx, mesh)
    losses = []
    for _ in range(STEPS):
        state, metrics = step_fn(state, parallel.to_global(batch, mesh))
        losses.append(float(metrics["loss"]))
    return initial, jax.device_get(state), losses


def test_simclr_step_equals_a_reference_written_another_way():
    config = tiny_config()
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (16, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8)
    batch = {"image": images, "label": np.zeros(16, np.int32)}

    mesh = parallel.make_mesh()
    assert mesh.size == 8
    method = simclr.make(config, IMAGE_SIZE, parallel.DATA_AXIS)
    tx = optim.make_optimizer(
        "lars", optax.constant_schedule(LEARNING_RATE), weight_decay=WEIGHT_DECAY,
        momentum=MOMENTUM,
    )  # fmt: skip
    initial, got, losses = sharded_steps(method, tx, batch, mesh)

    model = simclr.build_model(config, bn_axis_name=None)
    aug_kwargs = simclr.augment_kwargs(config, IMAGE_SIZE)
    params, batch_stats = initial.params, initial.batch_stats
    velocity = {path: np.zeros_like(leaf) for path, leaf in flat(params).items()}
    structure = jax.tree.structure(params)

    def loss_fn(params, batch_stats, view1, view2):
        (_, projections), updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            jnp.concatenate([view1, view2]),
            mutable=["batch_stats"],
        )
        loss = reference_nt_xent(projections[:16], projections[16:], config.temperature)
        return loss, updates["batch_stats"]

    # Jitted: the same ops dispatched one by one cost minutes on two cores.
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    views = jax.jit(lambda key: augment.simclr_views(key, jnp.asarray(images), **aug_kwargs))
    want_losses = []
    for step in range(STEPS):
        view1, view2 = views(jax.random.fold_in(initial.rng, step))
        (loss, batch_stats), grads = value_and_grad(params, batch_stats, view1, view2)
        want_losses.append(float(loss))
        new_params, velocity = reference_lars(flat(params), flat(grads), velocity)
        params = jax.tree.unflatten(structure, [new_params[path] for path in flat(params)])

    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    want_params = flat(params)
    for path, leaf in flat(got.params).items():
        np.testing.assert_allclose(leaf, want_params[path], rtol=2e-4, atol=5e-5, err_msg=path)
    want_stats = flat(batch_stats)
    for path, leaf in flat(got.batch_stats).items():
        np.testing.assert_allclose(leaf, want_stats[path], rtol=1e-4, atol=1e-6, err_msg=path)
    moved = max(np.abs(a - b).max() for a, b in zip(
        flat(got.params).values(), flat(initial.params).values(), strict=True
    ))  # fmt: skip
    assert moved > 1e-3


ADAM_LR, ADAM_DECAY, B1, B2, ADAM_EPS = 1e-2, 0.01, 0.9, 0.999, 1e-6


def reference_bert_adamw(params, grads, moments):
    """google-research/bert's AdamWeightDecayOptimizer (no bias correction) on host arrays."""
    new_params, new_moments = {}, {}
    for path, weight in params.items():
        grad = grads[path]
        m, v = moments[path]
        m, v = B1 * m + (1 - B1) * grad, B2 * v + (1 - B2) * grad**2
        update = m / (np.sqrt(v) + ADAM_EPS)
        # BERT decays kernels and embeddings, not LayerNorm parameters or biases.
        if path[-1] in ("kernel", "embedding") and not any("norm" in name for name in path):
            update = update + ADAM_DECAY * weight
        new_params[path], new_moments[path] = weight - ADAM_LR * update, (m, v)
    return new_params, new_moments


def test_mlm_step_equals_a_reference_written_another_way():
    import test_mlm

    from ssl_jax import masking
    from ssl_jax.methods import mlm

    config = test_mlm.tiny_config()
    config.model.dropout_rate = 0.0  # the reference's forward pass has no dropout keys to match
    rng = np.random.default_rng(6)
    ids = test_mlm.random_sequences(rng, 16, 16, pad_max=6)
    batch = {"token_ids": ids, "segment_ids": np.zeros_like(ids)}
    mesh = parallel.make_mesh()
    method = mlm.make(config, None, parallel.DATA_AXIS, vocab=test_mlm.VOCAB)
    tx = optim.make_optimizer(
        "adamw", optax.constant_schedule(ADAM_LR), weight_decay=ADAM_DECAY, b2=B2, eps=ADAM_EPS,
        bias_correction=False,
    )  # fmt: skip
    initial, got, losses = sharded_steps(method, tx, batch, mesh)

    # The reference scores every position with the tied decoder and picks the masked ones from a
    # dense [B, L] map of targets, instead of gathering the masked positions first.
    model = mlm.build_model(config, test_mlm.VOCAB)
    vocab = test_mlm.VOCAB
    params = initial.params
    moments = {path: (np.zeros_like(w), np.zeros_like(w)) for path, w in flat(params).items()}
    structure = jax.tree.structure(params)
    every_position = jnp.broadcast_to(jnp.arange(16), (16, 16))

    @jax.jit
    @jax.value_and_grad
    def value_and_grad(params, input_ids, targets):
        logits, _ = model.apply(
            {"params": params}, input_ids, jnp.zeros_like(input_ids), every_position, train=False
        )
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        picked = jnp.take_along_axis(log_probs, jnp.maximum(targets, 0)[..., None], -1)[..., 0]
        return -jnp.sum(jnp.where(targets >= 0, picked, 0.0)) / jnp.sum(targets >= 0)

    want_losses = []
    for step in range(STEPS):
        mask_key, _ = jax.random.split(jax.random.fold_in(initial.rng, step))
        input_ids, positions, labels, weights = masking.mask_tokens(
            mask_key, jnp.asarray(ids), mask_id=vocab.mask_id, vocab_size=vocab.size,
            special_ids=vocab.special_ids, mask_rate=config.mlm.mask_rate,
            max_predictions=config.mlm.max_predictions, example_ids=jnp.arange(16),
        )  # fmt: skip
        positions, labels, weights = (np.asarray(x) for x in (positions, labels, weights))
        targets = np.full((16, 16), -1)
        for row, col in zip(*np.nonzero(weights), strict=True):
            targets[row, positions[row, col]] = labels[row, col]
        assert (targets >= 0).sum() == weights.sum() > 0

        loss, grads = value_and_grad(params, input_ids, targets)
        want_losses.append(float(loss))
        new_params, moments = reference_bert_adamw(flat(params), flat(grads), moments)
        params = jax.tree.unflatten(structure, [new_params[path] for path in flat(params)])

    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    want_params = flat(params)
    for path, leaf in flat(got.params).items():
        # Adam moves entries with rounding-level gradients (attention key biases) by ~lr too.
        np.testing.assert_allclose(leaf, want_params[path], rtol=1e-4, atol=2e-5, err_msg=path)
    assert (
        max(
            np.abs(a - b).max()
            for a, b in zip(flat(got.params).values(), flat(initial.params).values(), strict=True)
        )
        > 1e-3
    )


# Eight examples a device: BatchNorm over two would make its gradient mostly rounding noise.
SGD_LR, SGD_DECAY, SGD_MOMENTUM, EMA, BATCH = 0.1, 0.05, 0.9, 0.9, 64
QUEUE = 2 * BATCH


def reference_sgd(params, grads, velocity):
    """Heavy-ball SGD with decay added to the gradient of kernels only, on host arrays."""
    new_params, new_velocity = {}, {}
    for path, weight in params.items():
        grad = grads[path] + (SGD_DECAY * weight if path[-1] == "kernel" else 0.0)
        new_velocity[path] = SGD_MOMENTUM * velocity[path] + grad
        new_params[path] = weight - SGD_LR * new_velocity[path]
    return new_params, new_velocity


def reference_info_nce_with_queue(q, k, queue, temperature):
    """-log softmax of each query's positive among [its key, every queued key], batch mean."""
    unit = lambda x: x / jnp.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    q, k, queue = unit(q), unit(k), unit(queue)
    logits = jnp.concatenate([jnp.sum(q * k, axis=1, keepdims=True), q @ queue.T], axis=1)
    logits = logits / temperature
    return jnp.mean(jax.scipy.special.logsumexp(logits, axis=1) - logits[:, 0])


@pytest.mark.slow
def test_moco_v2_step_equals_a_reference_written_another_way():
    """Two 8-device MoCo v2 steps (shuffle BN, a queue that 2 steps of keys fill, EMA 0.9).

    The reference runs each device's share through the model one share at a time: queries on
    their own device's views, keys on the shares of a permuted batch put back in order with the
    inverse permutation; InfoNCE written out with the queue, ``jax.grad``, SGD in NumPy, the key
    encoder as 0.9 key + 0.1 query by formula, the keys written at the queue's pointer.
    """
    from configs import moco_v2_fashion_mnist
    from ssl_jax.methods import moco

    config = moco_v2_fashion_mnist.get_config("runlocal")
    config.model.width_multiplier = 0.0625
    config.head.hidden_dim, config.head.output_dim = 16, 8
    config.moco.update(queue_size=QUEUE, momentum=EMA, momentum_cosine=False, bn="shuffle")
    config.moco.bn_group_size = BATCH // 8  # one BN group per device's share
    config.batch_size = BATCH
    temperature = config.temperature
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (BATCH, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8)
    batch = {"image": images, "label": np.zeros(BATCH, np.int32)}
    mesh = parallel.make_mesh()
    method = moco.make(config, IMAGE_SIZE, parallel.DATA_AXIS, total_steps=STEPS)
    tx = optim.make_optimizer(
        "sgd", optax.constant_schedule(SGD_LR), weight_decay=SGD_DECAY, momentum=SGD_MOMENTUM,
        nesterov=False,
    )  # fmt: skip
    initial, got, losses = sharded_steps(method, tx, batch, mesh)

    model = method.loss.keywords["query_model"]  # the forward pass is all the two share
    aug_kwargs = simclr.augment_kwargs(config, IMAGE_SIZE)
    per_device = BATCH // 8
    shares = [slice(d * per_device, (d + 1) * per_device) for d in range(8)]
    params, batch_stats = initial.params, initial.batch_stats
    key_params, key_stats = initial.extra["key_params"], initial.extra["key_batch_stats"]
    queue, pointer = np.asarray(initial.extra["queue"]), int(initial.extra["queue_ptr"])
    velocity = {path: np.zeros_like(leaf) for path, leaf in flat(params).items()}
    structure = jax.tree.structure(params)
    mean = lambda trees: jax.tree.map(lambda *x: sum(x) / len(x), *trees)  # noqa: E731
    views = jax.jit(lambda key: augment.simclr_views(
        key, jnp.asarray(images), example_ids=jnp.arange(BATCH), **aug_kwargs
    ))  # fmt: skip

    # Jitted whole: the same ops eagerly, one dispatch each, took minutes on two cores.
    @jax.jit
    def key_forward(key_params, key_stats, shuffled):
        outputs = [
            model.apply(
                {"params": key_params, "batch_stats": key_stats}, shuffled[share], train=True,
                predict=False, mutable=["batch_stats"],
            )
            for share in shares
        ]  # fmt: skip
        keys = jnp.concatenate([out for (_, out), _ in outputs])
        return keys, mean([updates["batch_stats"] for _, updates in outputs])

    def loss_fn(params, batch_stats, view1, keys, queue):
        applied = [
            model.apply(
                {"params": params, "batch_stats": batch_stats}, view1[share], train=True,
                mutable=["batch_stats"],
            )
            for share in shares
        ]  # fmt: skip
        q = jnp.concatenate([out[1] for out, _ in applied])
        loss = reference_info_nce_with_queue(q, keys, queue, temperature)
        return loss, mean([updates["batch_stats"] for _, updates in applied])

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    want_losses = []
    for step in range(STEPS):
        aug_key, shuffle_key = jax.random.split(jax.random.fold_in(initial.rng, step))
        view1, view2 = views(aug_key)
        permutation = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, 0), BATCH))
        shuffled_keys, new_key_stats = key_forward(key_params, key_stats, view2[permutation])
        keys = shuffled_keys[np.argsort(permutation)]
        (loss, batch_stats), grads = value_and_grad(
            params, batch_stats, view1, keys, jnp.asarray(queue)
        )
        want_losses.append(float(loss))
        new_params, velocity = reference_sgd(flat(params), flat(grads), velocity)
        params = jax.tree.unflatten(structure, [new_params[path] for path in flat(params)])
        key_params = jax.tree.map(lambda k, q: EMA * k + (1 - EMA) * q, key_params, params)
        key_stats = new_key_stats
        queue = queue.copy()
        queue[pointer : pointer + BATCH] = np.asarray(keys)
        pointer = (pointer + BATCH) % QUEUE

    want = {
        "params": params, "batch_stats": batch_stats, "key_params": key_params,
        "key_batch_stats": key_stats, "queue": queue,
    }  # fmt: skip
    have = {"params": got.params, "batch_stats": got.batch_stats, **got.extra}
    assert int(have.pop("queue_ptr")) == pointer == 0  # two steps fill the queue and wrap
    worst = {"loss": np.max(np.abs(np.subtract(losses, want_losses)) / np.abs(want_losses))}
    for part, tree in want.items():
        worst[part] = max(
            np.max(np.abs(leaf - flat(tree)[path]) / (np.abs(flat(tree)[path]) + 1e-2))
            for path, leaf in flat(have[part]).items()
        )
    print("worst relative differences", worst)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for part, tree in want.items():
        for path, leaf in flat(have[part]).items():
            np.testing.assert_allclose(
                leaf, flat(tree)[path], rtol=2e-4, atol=5e-5, err_msg=f"{part} {path}"
            )
    # The two EMA inputs differ by far more than the tolerance: m and 1 - m cannot be confused.
    moved = max(np.abs(a - b).max() for a, b in zip(
        flat(got.params).values(), flat(initial.params).values(), strict=True
    ))  # fmt: skip
    assert moved > 1e-2
