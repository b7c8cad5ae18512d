"""SimCLR train-step images/s: ssl_jax's real step against PyTorch eager (channels_last), A/B.

python benchmarks/simclr_step.py [--quick] [--batch_size=256 --rounds=3 --xla_flags="A|B"]
    [--jax_views=given|augmented]
Prints one JSON line: both sides' median step times, images/s, the ratio, and JAX's MFU.

Both sides train the same network: ResNet (CIFAR stem by default) + SimCLR 2-layer projection head
(2048 → 128, BN) + NT-Xent (τ 0.5) with LARS, on two views of each image. ssl_jax's step is
``train.make_train_step`` over ``methods.simclr``. The torch step gets the two views ready-made
(its augmentation runs in DataLoader workers, see augment_throughput.py); by default so does the
JAX step (``--jax_views=given``), and ``augmented`` adds ssl_jax's on-device augmentation.
MFU = XLA's cost-analysis FLOPs of the compiled step / step time / the peak of a large matmul
measured in the same worker.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import harness

_SCRIPT = os.path.abspath(__file__)
_MODELS = ("resnet18", "resnet50")


def compiled_jax_step(args: dict) -> tuple[Any, Any, Any, float]:
    """ssl_jax's SimCLR step for the benchmark's ``args``: (compiled, state, batch, compile_s)."""
    import jax
    import numpy as np

    sys.path.insert(0, str(harness.REPO))  # configs/ is not an installed package
    from configs import simclr_cifar10
    from ssl_jax import train
    from ssl_jax.core import optim, parallel
    from ssl_jax.methods import simclr

    config = simclr_cifar10.get_config()
    config.batch_size = args["batch_size"]
    config.model.name = args["model"]
    config.model.stem = args["stem"]
    config.dtype = args["dtype"]
    config.model.cpu_conv_rewrites = {"auto": None, "on": True, "off": False}[args["rewrites"]]
    size = args["image_size"]
    # One device: the torch side runs on one too.
    mesh = parallel.make_mesh(jax.devices()[:1])
    if args["views"] == "given":
        _skip_augmentation()
    method = simclr.make(config, size, parallel.DATA_AXIS)
    schedule = optim.make_schedule(1.0, total_steps=10_000, warmup_steps=100)
    tx = optim.make_optimizer("lars", schedule, weight_decay=config.weight_decay)
    images = np.random.default_rng(0).integers(0, 256, (args["batch_size"], size, size, 3), "uint8")
    state = train.create_state(method, tx, 0, {"image": images[:2]}, mesh)
    batch = parallel.to_global({"image": images, "label": np.zeros(len(images), np.int32)}, mesh)
    step = train.make_train_step(method, tx, mesh)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    return compiled, state, batch, time.perf_counter() - start


def jax_worker(args: dict) -> tuple[dict, callable]:
    import jax

    compiled, state, batch, compile_s = compiled_jax_step(args)
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    run_steps = harness.jax_step_timer(compiled, state, batch)
    peak = matmul_peak_flops(args["dtype"], args.get("peak_matmul_size"))
    info = {
        "side": "jax",
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        # What XLA ran with, including the flag ``import ssl_jax`` adds (ssl_jax/xla_defaults.py).
        "effective_xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compile_s": round(compile_s, 1),
        "step_flops": flops,
        "matmul_peak_flops": peak,
    }
    return info, lambda: {"step_s": run_steps(args["steps"])}


def _skip_augmentation() -> None:
    """Views as the torch side gets them: ready-made, so both steps do the same work.

    The image and its mirror image stand in for the two augmented views; the step traces
    ``augment.simclr_views`` at call time, so replacing it here removes the augmentation (crop,
    jitter, grayscale, blur) and nothing else.
    """
    import jax.numpy as jnp

    from ssl_jax.vision import augment

    def given_views(rng, images, **kwargs):
        del rng, kwargs
        views = jnp.asarray(images, jnp.float32) / 255.0
        return views, views[:, :, ::-1]

    augment.simclr_views = given_views


def matmul_peak_flops(dtype: str, n: int | None = None) -> float:
    """Best of a few large square matmuls in ``dtype``: the peak an MFU is taken against."""
    import jax
    import jax.numpy as jnp

    n = n or (4096 if jax.default_backend() == "cpu" else 16384)
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def torch_worker(args: dict) -> tuple[dict, callable]:
    import torch
    import torchvision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    encoder = getattr(torchvision.models, args["model"])(zero_init_residual=True)
    if args["stem"] == "cifar":
        encoder.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        encoder.maxpool = torch.nn.Identity()
    features = encoder.fc.in_features
    encoder.fc = torch.nn.Identity()
    head = torch.nn.Sequential(
        torch.nn.Linear(features, 2048, bias=False),
        torch.nn.BatchNorm1d(2048),
        torch.nn.ReLU(),
        torch.nn.Linear(2048, 128, bias=False),
        torch.nn.BatchNorm1d(128, affine=False),
    )
    model = torch.nn.Sequential(encoder, head).to(device, memory_format=torch.channels_last)
    optimizer = Lars(model.parameters(), lr=0.1, weight_decay=1e-6, momentum=0.9)
    size, batch = args["image_size"], args["batch_size"]
    views = torch.rand(2 * batch, 3, size, size, device=device)
    views = views.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device, torch.bfloat16, enabled=args["dtype"] == "bfloat16")

    def step() -> None:
        with autocast:
            z = model(views)
        loss = nt_xent(z.float(), batch, 0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def run_steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / n

    run_steps(1)
    info = {
        "side": "torch",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "memory_format": "channels_last",
    }
    return info, lambda: {"step_s": run_steps(args["steps"])}


def nt_xent(z, batch: int, temperature: float):
    import torch

    z = torch.nn.functional.normalize(z, dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(-1e4)
    targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)
    return torch.nn.functional.cross_entropy(logits, targets)


def Lars(params, *, lr: float, weight_decay: float, momentum: float):  # noqa: N802
    """optax.lars's update (decay and trust ratio on weight matrices only, trust 0.001)."""
    import torch

    class _Lars(torch.optim.Optimizer):
        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad
                    if p.ndim > 1:
                        g = g.add(p, alpha=weight_decay)
                        p_norm, g_norm = torch.linalg.norm(p), torch.linalg.norm(g)
                        ratio = torch.where(
                            (p_norm > 0) & (g_norm > 0), 0.001 * p_norm / g_norm, 1.0
                        )
                        g = g * ratio
                    state = self.state[p]
                    trace = state.get("trace")
                    if trace is None:
                        trace = state["trace"] = torch.zeros_like(p)
                    trace.mul_(momentum).add_(g)
                    p.add_(trace, alpha=-lr)

    return _Lars(params, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("jax", "torch"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for development")
    parser.add_argument("--batch_size", type=int, default=256, help="images (2 views each)")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--model", default="resnet18", choices=_MODELS)
    parser.add_argument("--stem", default="cifar", choices=("cifar", "imagenet"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument(
        "--xla_flags",
        default=os.environ.get("XLA_FLAGS", ""),
        help="XLA_FLAGS of the JAX side; a '|' list runs one JAX worker per entry, A/B",
    )
    parser.add_argument(
        "--jax_views",
        default="given",
        help="'given': the JAX step gets ready-made views, as torch does; 'augmented': it also "
        "runs ssl_jax's on-device augmentation; 'given|augmented' runs both, A/B",
    )
    parser.add_argument(
        "--jax_cpu_conv_rewrites",
        default="auto",
        help="config.model.cpu_conv_rewrites of the JAX side: 'auto' (on for the CPU), 'on' or "
        "'off'; 'on|off' runs both, A/B",
    )
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per round")
    parser.add_argument("--no_torch", action="store_true", help="JAX side only")
    parser.add_argument(
        "--peak_matmul_size", type=int, help="side of the MFU's peak matmuls (4096 CPU, 16384 GPU)"
    )
    args = parser.parse_args()
    if args.worker:
        harness.serve({"jax": jax_worker, "torch": torch_worker}[args.worker])
        return
    if args.quick:
        args.batch_size, args.rounds, args.steps = 16, 2, 1
    setup = {
        key: getattr(args, key)
        for key in (
            "batch_size",
            "image_size",
            "model",
            "stem",
            "dtype",
            "steps",
            "peak_matmul_size",
        )
    }
    variants = [
        (flags.strip(), views.strip(), rewrites.strip())
        for flags in args.xla_flags.split("|")
        for views in args.jax_views.split("|")
        for rewrites in args.jax_cpu_conv_rewrites.split("|")
    ]
    if any(views not in ("given", "augmented") for _, views, _ in variants):
        parser.error(f"--jax_views must be 'given', 'augmented' or both; got {args.jax_views!r}")
    if any(rewrites not in ("auto", "on", "off") for _, _, rewrites in variants):
        parser.error(
            "--jax_cpu_conv_rewrites must be 'auto', 'on', 'off' or a '|' list of them; "
            f"got {args.jax_cpu_conv_rewrites!r}"
        )
    names = [
        f"xla[{flags or 'default'}, views {views}, rewrites {rew}]" if len(variants) > 1 else "xla"
        for flags, views, rew in variants
    ]
    workers = [
        harness.Worker(
            harness.jax_python(),
            _SCRIPT,
            "jax",
            {**setup, "views": views, "rewrites": rewrites},
            env={"XLA_FLAGS": flags},
        )  # fmt: skip
        for flags, views, rewrites in variants
    ]
    if not args.no_torch:
        workers.append(harness.Worker(harness.torch_python(), _SCRIPT, "torch", setup))
    rounds = harness.alternate(workers, args.rounds)
    record = {"benchmark": "simclr_step", **setup, "views_per_step": 2 * args.batch_size,
              "rounds": args.rounds}  # fmt: skip
    medians = [harness.median([r["step_s"] for r in side]) for side in rounds]
    for (flags, views, rewrites), name, worker, side, step_s in zip(
        variants, names, workers, rounds, medians, strict=False
    ):
        info = worker.info
        record[f"jax_{name}"] = {
            **info,
            "xla_flags": flags,
            "views": views,
            "cpu_conv_rewrites": rewrites,
            "step_s_median": round(step_s, 4),
            "step_s_rounds": [round(r["step_s"], 4) for r in side],
            "images_per_s": round(args.batch_size / step_s, 1),
            "mfu": round(info["step_flops"] / step_s / info["matmul_peak_flops"], 3),
        }
    if not args.no_torch:
        torch_s = medians[-1]
        record["torch"] = {
            **workers[-1].info,
            "step_s_median": round(torch_s, 4),
            "step_s_rounds": [round(r["step_s"], 4) for r in rounds[-1]],
            "images_per_s": round(args.batch_size / torch_s, 1),
        }
        for name, step_s in zip(names, medians, strict=False):
            record[f"jax_{name}_over_torch"] = round(torch_s / step_s, 3)
    harness.emit(record)


if __name__ == "__main__":
    main()
