"""BERT MLM train-step tokens/s: ssl_jax's real step against HF transformers' BertForMaskedLM, A/B.

python benchmarks/mlm_step.py [--quick] [--model=bert_small --batch_size=32 --seq_len=128]
Prints one JSON line.

Same sizes on both sides (ssl_jax.models.bert's table; vocab 30522 as BERT's uncased WordPiece),
dropout 0.1, AdamW (lr 1e-4, decay 0.01), 15% of tokens predicted. ssl_jax's step
(``train.make_train_step`` over ``methods.mlm``) masks on device and decodes only the
``max_predictions`` gathered positions; HF's model is used as documented (labels -100 at
unmasked tokens), which decodes every position against the vocabulary. The torch side's masks
are drawn once, outside the timing. HF's model is randomly initialised from a BertConfig.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import harness

_SCRIPT = os.path.abspath(__file__)
_VOCAB_SIZE = 30522
_SIZES = {"bert_tiny": (2, 128), "bert_small": (4, 512), "bert_base": (12, 768)}


def jax_worker(args: dict) -> tuple[dict, callable]:
    import jax

    sys.path.insert(0, str(harness.REPO))  # configs/ is not an installed package
    from configs import bert_mlm_ptb
    from ssl_jax import train
    from ssl_jax.core import optim, parallel
    from ssl_jax.methods import mlm
    from ssl_jax.text.tokenizer import RESERVED_TOKENS, Vocab

    config = bert_mlm_ptb.get_config()
    config.batch_size = args["batch_size"]
    config.model.name = args["model"]
    config.model.max_position = 512
    config.text.max_seq_len = args["seq_len"]
    config.mlm.max_predictions = args["max_predictions"]
    config.dtype = args["dtype"]
    filler = tuple(f"piece{i}" for i in range(_VOCAB_SIZE - len(RESERVED_TOKENS)))
    vocab = Vocab(RESERVED_TOKENS + filler)
    method = mlm.make(config, vocab=vocab)
    schedule = optim.make_schedule(1e-4, total_steps=10_000, warmup_steps=100, kind="linear")
    tx = optim.make_optimizer("adamw", schedule, weight_decay=0.01)
    mesh = parallel.make_mesh(jax.devices()[:1])
    tokens = _tokens(args)
    state = train.create_state(method, tx, 0, {"token_ids": tokens[:2]}, mesh)
    batch = parallel.to_global({"token_ids": tokens}, mesh)
    start = time.perf_counter()
    compiled = train.make_train_step(method, tx, mesh).lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    run_steps = harness.jax_step_timer(compiled, state, batch)
    info = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
            "compile_s": round(compile_s, 1)}  # fmt: skip
    return info, lambda: {"step_s": run_steps(args["steps"])}


def torch_worker(args: dict) -> tuple[dict, callable]:
    import numpy as np
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    layers, hidden = _SIZES[args["model"]]
    config = transformers.BertConfig(
        vocab_size=_VOCAB_SIZE, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, intermediate_size=4 * hidden,
        max_position_embeddings=512, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    tokens = torch.from_numpy(_tokens(args)).long()
    rng = np.random.default_rng(1)
    chosen = torch.from_numpy(rng.random(tokens.shape) < 0.15)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, -100)).to(device)
    inputs = torch.where(chosen, torch.full_like(tokens, 4), tokens).to(device)  # [MASK]
    autocast = torch.autocast(device, torch.bfloat16, enabled=args["dtype"] == "bfloat16")

    def run_steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            with autocast:
                loss = model(input_ids=inputs, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / n

    run_steps(1)
    info = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "attention": model.config._attn_implementation}  # fmt: skip
    return info, lambda: {"step_s": run_steps(args["steps"])}


def _tokens(args: dict):
    import numpy as np

    rng = np.random.default_rng(0)
    # Ids above the 5 reserved ones: every position is a real, maskable token.
    return rng.integers(5, _VOCAB_SIZE, (args["batch_size"], args["seq_len"]), np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("jax", "torch"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for development")
    parser.add_argument("--model", default="bert_small", choices=sorted(_SIZES))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--max_predictions", type=int, default=20)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--no_torch", action="store_true", help="JAX side only")
    args = parser.parse_args()
    if args.worker:
        harness.serve({"jax": jax_worker, "torch": torch_worker}[args.worker])
        return
    if args.quick:
        args.model, args.batch_size, args.seq_len, args.max_predictions = "bert_tiny", 8, 32, 5
        args.rounds, args.steps = 2, 1
    setup = {key: getattr(args, key) for key in
             ("model", "batch_size", "seq_len", "max_predictions", "dtype", "steps")}  # fmt: skip
    workers = [harness.Worker(harness.jax_python(), _SCRIPT, "jax", setup)]
    if not args.no_torch:
        workers.append(harness.Worker(harness.torch_python(), _SCRIPT, "torch", setup))
    rounds = harness.alternate(workers, args.rounds)
    tokens = args.batch_size * args.seq_len
    record = {"benchmark": "mlm_step", **setup, "rounds": args.rounds}
    seconds = []
    for name, worker, side in zip(("jax", "torch"), workers, rounds, strict=False):
        step_s = harness.median([r["step_s"] for r in side])
        seconds.append(step_s)
        record[name] = {**worker.info, "step_s_median": round(step_s, 4),
                        "step_s_rounds": [round(r["step_s"], 4) for r in side],
                        "tokens_per_s": round(tokens / step_s)}  # fmt: skip
    if not args.no_torch:
        record["jax_over_torch"] = round(seconds[1] / seconds[0], 3)
    harness.emit(record)


if __name__ == "__main__":
    main()
