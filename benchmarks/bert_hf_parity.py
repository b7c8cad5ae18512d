"""BERT weights both ways against Hugging Face transformers: same logits to 1e-4 on padded batches.

python benchmarks/bert_hf_parity.py [--torch_python=/work/torch_venv/bin/python] [--workdir=DIR]
Prints one JSON line (max |logit difference| each direction, at the real tokens).

1. transformers (its own venv, a separate process): a randomly initialised small
   ``BertForMaskedLM`` with every tensor redrawn (LayerNorm scales and biases too, so a swapped
   name cannot hide behind ones and zeros), saved with ``save_pretrained``; its logits on a batch
   with trailing padding (``attention_mask = input_ids != 0``) and segment ids 0 / 1.
2. ssl_jax (this venv, another process): that folder read by
   ``bert_checkpoints.load_hf`` into ``ssl_jax.models.Bert``; its logits on the same batch; then
   ours written back with ``save_hf``.
3. transformers loads ours with ``from_pretrained`` (no missing or unexpected keys allowed) and
   computes the logits again. Inputs and logits travel as .npy files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

_SCRIPT = os.path.abspath(__file__)
_REPO = os.path.dirname(os.path.dirname(_SCRIPT))
_CONFIG = dict(
    vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=48, max_position_embeddings=24, type_vocab_size=2, pad_token_id=0,
)  # fmt: skip
_LENGTHS = (16, 11, 5)  # real tokens per row; the rest of each row of 16 is padding


def _inputs(folder: str) -> None:
    rng = np.random.default_rng(0)
    length = max(_LENGTHS)
    token_ids = rng.integers(1, _CONFIG["vocab_size"], (len(_LENGTHS), length))
    segment_ids = np.zeros_like(token_ids)
    for row, real in enumerate(_LENGTHS):
        token_ids[row, real:] = 0
        segment_ids[row, real // 2 : real] = 1
    np.save(os.path.join(folder, "token_ids.npy"), token_ids.astype(np.int64))
    np.save(os.path.join(folder, "segment_ids.npy"), segment_ids.astype(np.int64))


def torch_side(folder: str, stage: str) -> None:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    token_ids = torch.from_numpy(np.load(os.path.join(folder, "token_ids.npy")))
    segment_ids = torch.from_numpy(np.load(os.path.join(folder, "segment_ids.npy")))
    if stage == "create":
        torch.manual_seed(0)
        model = BertForMaskedLM(BertConfig(**_CONFIG))
        with torch.no_grad():
            for name, tensor in model.named_parameters():
                tensor.normal_(1.0 if "LayerNorm.weight" in name else 0.0, 0.2)
        model.save_pretrained(os.path.join(folder, "hf"))
        out_name = "torch_logits.npy"
    else:
        model, info = BertForMaskedLM.from_pretrained(
            os.path.join(folder, "ours_hf"), output_loading_info=True
        )
        problems = {key: value for key, value in info.items() if value}
        if problems:
            raise SystemExit(f"transformers did not load ours cleanly: {problems}")
        out_name = "torch_logits_from_ours.npy"
    model.eval()
    with torch.no_grad():
        logits = model(
            input_ids=token_ids, token_type_ids=segment_ids, attention_mask=(token_ids != 0).long()
        ).logits
    np.save(os.path.join(folder, out_name), logits.numpy())


def ours_side(folder: str) -> None:
    sys.path.insert(0, _REPO)
    import jax.numpy as jnp

    from ssl_jax.models.bert import Bert
    from ssl_jax.models.interop import bert_checkpoints

    fields, params = bert_checkpoints.load_hf(os.path.join(folder, "hf"))
    token_ids = jnp.asarray(np.load(os.path.join(folder, "token_ids.npy")), jnp.int32)
    segment_ids = jnp.asarray(np.load(os.path.join(folder, "segment_ids.npy")), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(token_ids.shape[1]), token_ids.shape)
    logits, _ = Bert(**fields).apply({"params": params}, token_ids, segment_ids, positions)
    np.save(os.path.join(folder, "ours_logits.npy"), np.asarray(logits))
    bert_checkpoints.save_hf(os.path.join(folder, "ours_hf"), fields, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch_python", default="/work/torch_venv/bin/python")
    parser.add_argument("--workdir", default=None, help="keep the exchanged files here")
    parser.add_argument("--side", choices=["torch", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--stage", default="create", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "torch":
        return torch_side(args.workdir, args.stage)
    if args.side == "ours":
        return ours_side(args.workdir)
    folder = args.workdir or tempfile.mkdtemp(prefix="bert_hf_parity-")
    os.makedirs(folder, exist_ok=True)
    _inputs(folder)
    for python, side, stage in (
        (args.torch_python, "torch", "create"),
        (sys.executable, "ours", ""),
        (args.torch_python, "torch", "reload"),
    ):
        command = [python, _SCRIPT, f"--side={side}", f"--workdir={folder}", f"--stage={stage}"]
        subprocess.run(command, check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    valid = np.load(os.path.join(folder, "token_ids.npy")) != 0
    load = lambda name: np.load(os.path.join(folder, name))[valid]  # noqa: E731
    hf_to_ours = float(np.abs(load("ours_logits.npy") - load("torch_logits.npy")).max())
    ours_to_hf = float(np.abs(load("torch_logits_from_ours.npy") - load("ours_logits.npy")).max())
    print(json.dumps({
        "benchmark": "bert_hf_parity",
        "config": _CONFIG,
        "lengths": _LENGTHS,
        "logit_scale": float(np.abs(load("torch_logits.npy")).max()),
        "max_abs_diff_hf_to_ours": hf_to_ours,
        "max_abs_diff_ours_to_hf": ours_to_hf,
        "within_1e-4": hf_to_ours <= 1e-4 and ours_to_hf <= 1e-4,
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
