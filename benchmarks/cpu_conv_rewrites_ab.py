"""``config.model.cpu_conv_rewrites`` on against off: one process, steps interleaved.

python benchmarks/cpu_conv_rewrites_ab.py [--quick] [--batch_size=256 --rounds=5]
Prints one JSON line: each variant's median step time, the ratio, and whether the two first
steps agree (loss and gradient norm), for ssl_jax's SimCLR ResNet-18 step with ready-made views.

Both compiled steps live in the same process and alternate step by step, so drift of the
machine's speed (on shared 2-core machines, 10-30% between minutes) hits both alike; the
separate-process A/B is ``simclr_step.py --jax_cpu_conv_rewrites="on|off"``.
"""

from __future__ import annotations

import argparse
import os
import time

import harness
import simclr_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for development")
    parser.add_argument("--batch_size", type=int, default=256, help="images (2 views each)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--rounds", type=int, default=5, help="steps per variant, interleaved")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.rounds = 16, 2

    import jax

    setup = {"batch_size": args.batch_size, "model": args.model, "stem": "cifar",
             "dtype": "float32", "image_size": 32, "views": "given"}  # fmt: skip
    variants = ("off", "on")
    steps, states, first = {}, {}, {}
    for name in variants:
        steps[name], state, batch, _ = simclr_step.compiled_jax_step({**setup, "rewrites": name})
        states[name], metrics = steps[name](state, batch)
        first[name] = {k: float(metrics[k]) for k in ("loss", "grad_norm")}
    seconds = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name in variants:
            start = time.perf_counter()
            states[name], metrics = steps[name](states[name], batch)
            jax.block_until_ready(metrics)
            seconds[name].append(time.perf_counter() - start)
    medians = {name: harness.median(s) for name, s in seconds.items()}
    record = {
        "benchmark": "cpu_conv_rewrites_ab",
        "model": args.model,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "effective_xla_flags": os.environ.get("XLA_FLAGS", ""),
        "first_step": first,
        "same_first_step": first["on"] == first["off"],
        **{
            f"rewrites_{name}": {
                "step_s_median": round(m, 4),
                "step_s_rounds": [round(s, 4) for s in seconds[name]],
            }
            for name, m in medians.items()
        },
        "on_faster_in_rounds": sum(
            on < off for on, off in zip(seconds["on"], seconds["off"], strict=True)
        ),
        "off_over_on": round(medians["off"] / medians["on"], 3),
    }
    harness.emit(record)


if __name__ == "__main__":
    main()
