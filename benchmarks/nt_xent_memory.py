"""NT-Xent forward + backward: time and peak memory, ssl_jax naive and chunked against torch naive.

python benchmarks/nt_xent_memory.py [--quick] [--sizes=4096,16384 --dim=128 --chunk_size=1024]
Prints one JSON line.

Each (implementation, N) case runs in a fresh process, so its peak is its own: on the CPU the
resident-set high-water mark (VmHWM, reset after inputs are made and the program compiled) minus
the RSS at that moment, over the first call; on a GPU the allocator's peak. Times are the median
of the calls after it. JAX also reports XLA's compiled temporary buffer size. Cases are run in
turn (JAX naive, JAX chunked, torch, again ...) and medians kept.
"""

from __future__ import annotations

import argparse
import inspect
import os
import time

import harness

_SCRIPT = os.path.abspath(__file__)


def _time_runs(run, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return harness.median(times)


def jax_worker(args: dict) -> tuple[dict, callable]:
    import jax
    import numpy as np

    from ssl_jax import losses

    n, dim = args["n"], args["dim"]
    rng = np.random.default_rng(0)
    z1 = jax.device_put(rng.standard_normal((n, dim), np.float32))
    z2 = jax.device_put(rng.standard_normal((n, dim), np.float32))
    kwargs = {"temperature": 0.5}
    if args["chunk_size"]:
        kwargs["chunk_size"] = args["chunk_size"]
    grad = jax.jit(jax.value_and_grad(lambda a, b: losses.nt_xent(a, b, **kwargs), (0, 1)))
    compiled = grad.lower(z1, z2).compile()
    temp_bytes = compiled.memory_analysis().temp_size_in_bytes
    device = jax.devices()[0]

    def run() -> None:
        jax.block_until_ready(compiled(z1, z2))

    def run_round() -> dict:
        # The first call's peak: memory freed after it stays resident in the allocator, so a
        # baseline taken after any call would hide the next call's peak.
        baseline = harness.rss_bytes()
        harness.reset_peak_rss()
        run()
        peak = harness.peak_rss_bytes() - baseline
        if device.platform != "cpu":
            peak = device.memory_stats()["peak_bytes_in_use"]
        return {"seconds": _time_runs(run, args["reps"]), "peak_bytes": peak}

    info = {"device": device.device_kind, "jax": jax.__version__, "xla_temp_bytes": temp_bytes}
    return info, run_round


def torch_worker(args: dict) -> tuple[dict, callable]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    n, dim = args["n"], args["dim"]
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(n, dim, generator=generator).to(device).requires_grad_()
    z2 = torch.randn(n, dim, generator=generator).to(device).requires_grad_()
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(device)

    def fwd_bwd() -> None:
        z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
        logits = z @ z.T / 0.5
        logits.fill_diagonal_(-1e4)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        z1.grad = z2.grad = None
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()

    def run_round() -> dict:
        baseline = harness.rss_bytes()
        harness.reset_peak_rss()
        fwd_bwd()  # measured as JAX's is: the first call's peak, then timed calls
        peak = harness.peak_rss_bytes() - baseline
        if device == "cuda":
            peak = torch.cuda.max_memory_allocated()
        return {"seconds": _time_runs(fwd_bwd, args["reps"]), "peak_bytes": peak}

    info = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__}  # fmt: skip
    return info, run_round


def chunking_available() -> bool:
    from ssl_jax import losses

    return "chunk_size" in inspect.signature(losses.nt_xent).parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("jax", "torch"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for development")
    parser.add_argument("--sizes", default="4096,16384", help="N: embeddings per view")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--chunk_size", type=int, default=1024, help="anchors per block")
    parser.add_argument("--rounds", type=int, default=2, help="fresh-process runs per case")
    parser.add_argument("--no_torch", action="store_true", help="JAX side only")
    args = parser.parse_args()
    if args.worker:
        harness.serve({"jax": jax_worker, "torch": torch_worker}[args.worker])
        return
    if args.quick:
        args.sizes, args.rounds, args.chunk_size = "512,1024", 2, 256
    cases = [("jax_naive", "jax", 0)]
    note = None
    if chunking_available():
        cases.append(("jax_chunked", "jax", args.chunk_size))
    else:
        note = "losses.nt_xent takes no chunk_size yet: chunked column skipped"
    python = {"jax": harness.jax_python()}
    if not args.no_torch:
        cases.append(("torch_naive", "torch", 0))
        python["torch"] = harness.torch_python()
    record = {"benchmark": "nt_xent_memory", "dim": args.dim, "chunk_size": args.chunk_size,
              "rounds": args.rounds, "note": note}  # fmt: skip
    for n in (int(size) for size in args.sizes.split(",")):
        # Few repeats where one call takes tens of seconds on a CPU.
        reps = 3 if n <= 4096 else 1
        runs = {name: [] for name, _, _ in cases}
        for _ in range(args.rounds):
            for name, side, chunk in cases:
                setup = {"n": n, "dim": args.dim, "chunk_size": chunk, "reps": reps}
                runs[name].append(harness.run_once(python[side], _SCRIPT, side, setup))
        entry = {}
        for name, results in runs.items():
            entry[name] = {
                "seconds": round(harness.median([r["seconds"] for r in results]), 3),
                "peak_gib": round(harness.median([r["peak_bytes"] for r in results]) / 2**30, 3),
                "device": results[0]["device"],
            }
            if "xla_temp_bytes" in results[0]:
                entry[name]["xla_temp_gib"] = round(results[0]["xla_temp_bytes"] / 2**30, 3)
        torch_s = entry.get("torch_naive", {}).get("seconds")
        for name in list(entry) if torch_s else ():
            if name.startswith("jax"):
                entry[f"{name}_speedup_over_torch"] = round(torch_s / entry[name]["seconds"], 2)
        record[f"n{n}"] = entry
    harness.emit(record)


if __name__ == "__main__":
    main()
