"""Eager vs SDPA attention of AdvMidiBertModel: forward (and optionally backward) time and peak memory.

Prints one line per implementation and the eager/sdpa time ratio. Random token ids, no data needed.

    python3 benchmarks/attention.py --batch-size 2 --length 256 --layers 2          # quick CPU check
    python3 benchmarks/attention.py --device cuda --batch-size 8 --length 1024 --backward   # paper sizes on a GPU
"""

from __future__ import annotations

import argparse
import time

import torch

from adversarial_midibert import AdvMidiBertConfig, AdvMidiBertModel


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--batch-size", type=int, default=2, help="segments per batch")
    parser.add_argument("--length", type=int, default=256, help="tokens per segment (<= 1024)")
    parser.add_argument("--layers", type=int, default=2, help="encoder layers (12 in the paper)")
    parser.add_argument("--hidden-size", type=int, default=768, help="hidden size (heads of 64)")
    parser.add_argument(
        "--position-embedding-type",
        default="relative_key_query",
        choices=["absolute", "relative_key", "relative_key_query"],
        help="position encoding",
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights dtype")
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward only")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (after one warm-up)")
    return parser.parse_args()


def measure(model: AdvMidiBertModel, ids: torch.Tensor, mask: torch.Tensor, args: argparse.Namespace) -> tuple[float, float]:
    """Mean seconds per step and peak GPU memory in GiB (0 on CPU)."""
    device = torch.device(args.device)

    def step() -> None:
        with torch.set_grad_enabled(args.backward):
            out = model(ids, attention_mask=mask).last_hidden_state
            if args.backward:
                out.float().square().mean().backward()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.repeats
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return seconds, peak


def main() -> None:
    args = parse_args()
    config = AdvMidiBertConfig(
        hidden_size=args.hidden_size,
        num_attention_heads=args.hidden_size // 64,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.layers,
        position_embedding_type=args.position_embedding_type,
    )
    torch.manual_seed(0)
    ids = torch.stack([torch.randint(4, v, (args.batch_size, args.length)) for v in config.vocab_sizes], -1)
    mask = torch.ones(args.batch_size, args.length, dtype=torch.long)
    mask[0, args.length // 2 :] = 0  # one half-padded segment
    ids, mask = ids.to(args.device), mask.to(args.device)
    times = {}
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = AdvMidiBertModel(config).to(args.device, getattr(torch, args.dtype))
        model.set_attn_implementation(implementation)
        model.train(args.backward)
        seconds, peak = measure(model, ids, mask, args)
        times[implementation] = seconds
        print(
            f"{implementation:5s} batch={args.batch_size} length={args.length} layers={args.layers} "
            f"{args.position_embedding_type} {args.dtype} {'fwd+bwd' if args.backward else 'fwd'} on {args.device}: "
            f"{seconds * 1000:.1f} ms/step, peak {peak:.2f} GiB"
        )
        del model
    print(f"eager/sdpa time ratio: {times['eager'] / times['sdpa']:.2f}")


if __name__ == "__main__":
    main()
