"""Turns the JSON lines of one ``run_all.sh`` run into the markdown results table (RESULTS.md).

python benchmarks/results_table.py RESULTS.jsonl > benchmarks/RESULTS.md
"""

from __future__ import annotations

import json
import sys


def _simclr_rows(record: dict) -> list[str]:
    torch = record.get("torch")
    what = (f"SimCLR train step, {record['model']} {record['stem']} stem, {record['batch_size']} "
            f"images x 2 views {record['image_size']}px, {record['dtype']}")  # fmt: skip
    rows = []
    for key, side in record.items():
        if not key.startswith("jax_") or key.endswith("_over_torch"):
            continue
        used = side.get("effective_xla_flags", side.get("xla_flags"))
        flags = f", XLA_FLAGS={used}" if used else ""
        views = f", views {side['views']}" if side.get("views") else ""
        if side.get("cpu_conv_rewrites"):
            views += f", cpu_conv_rewrites {side['cpu_conv_rewrites']}"
        peak = side["matmul_peak_flops"] / 1e9
        jax_text = (f"{side['images_per_s']} img/s (MFU {side['mfu']:.0%} of a "
                    f"{peak:.0f} GFLOP/s matmul{views}{flags})")  # fmt: skip
        torch_text = f"{torch['images_per_s']} img/s (eager, channels_last)" if torch else "-"
        ratio = record.get(f"{key}_over_torch", "-")
        rows.append(f"| {what} | {jax_text} | {torch_text} | {ratio}x |")
    return rows


def _nt_xent_rows(record: dict) -> list[str]:
    rows = []
    for key, entry in record.items():
        if not key.startswith("n") or not isinstance(entry, dict):
            continue
        torch = entry["torch_naive"]
        for name in ("jax_naive", "jax_chunked"):
            if name not in entry:
                continue
            side = entry[name]
            chunk = f", chunk {record['chunk_size']}" if name == "jax_chunked" else ""
            rows.append(
                f"| NT-Xent fwd+bwd, N={key[1:]}, dim {record['dim']} ({name[4:]}{chunk}) "
                f"| {side['seconds']} s, {side['peak_gib']} GiB "
                f"| {torch['seconds']} s, {torch['peak_gib']} GiB (naive) "
                f"| {entry[name + '_speedup_over_torch']}x |"
            )
    if record.get("note"):
        rows.append(f"| NT-Xent chunked | {record['note']} | | |")
    return rows


def _augment_rows(record: dict) -> list[str]:
    rows = []
    for key, entry in record.items():
        if not isinstance(entry, dict) or "jax_over_torch" not in entry:
            continue
        rows.append(
            f"| Two-view SimCLR augmentation, {key}, batch {record['batch_size']} "
            f"| {entry['jax']['views_per_s']} views/s (jit, {entry['jax']['device']}) "
            f"| {entry['torch']['views_per_s']} views/s (torchvision DataLoader, "
            f"{entry['torch']['loader_workers']} workers) | {entry['jax_over_torch']}x |"
        )
    return rows


def _mlm_rows(record: dict) -> list[str]:
    return [
        f"| MLM train step, {record['model']}, batch {record['batch_size']} x "
        f"{record['seq_len']} tokens, {record['dtype']}, AdamW "
        f"| {record['jax']['tokens_per_s']} tokens/s "
        f"| {record['torch']['tokens_per_s']} tokens/s (HF BertForMaskedLM) "
        f"| {record['jax_over_torch']}x |"
    ]


_ROWS = {
    "simclr_step": _simclr_rows,
    "nt_xent_memory": _nt_xent_rows,
    "augment_throughput": _augment_rows,
    "mlm_step": _mlm_rows,
}


def _devices(record: dict) -> set[str]:
    found = set()
    for value in record.values():
        if isinstance(value, dict):
            if "device" in value and ("jax" in value or "torch" in value):
                found.add(f"{'jax' if 'jax' in value else 'torch'}: {value['device']}")
            found |= _devices(value)
    return found


def table(records: list[dict]) -> str:
    machine = records[0]["machine"]
    versions = {}
    for record in records:
        for value in record.values():
            if isinstance(value, dict):
                for name in ("jax", "torch", "torchvision", "transformers"):
                    if isinstance(value.get(name), str):
                        versions[name] = value[name]
    devices = sorted(set().union(*(_devices(record) for record in records)))
    lines = [
        f"Measured {machine['date'][:10]} on {machine['cpu']} ({machine['cpu_cores']} cores); "
        f"devices: {', '.join(devices)}; "
        + ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))
        + ". A/B runs alternate the two sides; medians. Ratio > 1: ssl_jax faster.",
        "",
        "| benchmark | ssl_jax | anchor | ssl_jax / anchor |",
        "|---|---|---|---|",
    ]
    for record in records:
        lines.extend(_ROWS[record["benchmark"]](record))
    loads = [record["machine"]["load_avg_1m"] for record in records]
    lines += ["", f"Load average during the runs: {min(loads)}-{max(loads)} (1 min)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    with open(sys.argv[1]) as results:
        records = [json.loads(line) for line in results if line.startswith("{")]
    sys.stdout.write(table(records))


if __name__ == "__main__":
    main()
