#!/usr/bin/env python
"""Where a pre-training step spends its time, in fp32 and under bf16 autocast: ``torch.profiler`` tables per op.

Written to find why bf16 autocast is several times slower than fp32 on the project's CPU (an AVX2 machine without
AVX512-BF16 or AMX; 6.8x for a whole small-preset step, ``results/profile-step-small.json``): one warm-up step, then
one profiled step (forward, backward) per precision, printing the step's time and the ops with the most self time. On
such a CPU the matrix products (``aten::mm``, ``addmm``, ``bmm``) take the extra time in bf16 (oneDNN has no bf16
kernels there, ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is False): the model's own code (the relative-position
scores, sdpa) is not the cause, so the training scripts warn instead (``speed_and_memory.slow_bf16_warning``). Keep it
short on a shared CPU: base preset, 1 x 512 rows, random masking.

    python -m benchmarks.profile_step                     # whole steps, per-op tables (minutes on a busy CPU)
    python -m benchmarks.profile_step --preset small --batch_size 4 --seq_len 256 --masking adversarial --threads 1 \
        --output results/profile-step-small.json         # + the share of matrix products, written to a file
    python -m benchmarks.profile_step --ops --output results/bf16-cpu-ops.json   # the suspects one by one (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch.profiler import ProfilerActivity, profile

from adversarial_midibert.configuration_adv_midibert import AdvMidiBertConfig
from adversarial_midibert.modeling_adv_midibert import AdvMidiBertForMaskedLM
from adversarial_midibert.presets import PRESETS, preset_config_kwargs
from adversarial_midibert.pretraining import MASKING_METHODS, AdversarialMLM, step_generator
from benchmarks.pretrain_step import synthetic_batch

# The ops whose kernels are library matrix products (MKL / oneDNN): what torch.compile on the CPU calls as extern
# kernels, unchanged, and what bf16 slows down where oneDNN has no bf16 matrix kernels.
MATRIX_PRODUCT_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
                      "aten::_scaled_dot_product_flash_attention_for_cpu",
                      "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
                      "aten::_efficient_attention_forward",
                      "aten::_scaled_dot_product_efficient_attention", "aten::mkldnn_linear_pointwise"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="base", choices=sorted(PRESETS))
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--masking", default="random", choices=MASKING_METHODS)
    p.add_argument("--rows", type=int, default=12, help="Ops printed per table.")
    p.add_argument("--ops", action="store_true",
                   help="Instead of whole steps, time the suspects one by one in fp32 and bf16 (seconds): a linear "
                        "layer, the relative-position scores, sdpa with the bias, at the preset's sizes.")
    p.add_argument("--repeats", type=int, default=5, help="--ops: timed calls per op (median).")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    p.add_argument("--output", default=None, help="Write the timings (and, for whole steps, the op shares) to this "
                                                   "JSON file.")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ops:
        return time_ops(args)
    from benchmarks.results_file import ResultsFile

    output = ResultsFile(args.output, vars(args))
    rows = {}
    print(f"mkldnn bf16 supported: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}")
    torch.manual_seed(0)
    config = AdvMidiBertConfig(**preset_config_kwargs(args.preset))
    model = AdvMidiBertForMaskedLM(config)
    step = AdversarialMLM(model, masking=args.masking).train()
    batch = synthetic_batch(args.batch_size, args.seq_len, config.vocab_sizes, "cpu", 0)
    for dtype in ("fp32", "bf16"):
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        with autocast:
            out = step(batch, generator=step_generator(0, 0))  # warm-up
        out.loss.backward()
        model.zero_grad()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            with autocast:
                out = step(batch, generator=step_generator(0, 1))
            out.loss.backward()
            model.zero_grad()
            seconds = time.perf_counter() - start
        print(f"== {dtype}: {seconds:.2f} s per step ({args.masking} masking, {args.preset}, "
              f"{args.batch_size} x {args.seq_len})")
        averages = prof.key_averages()
        print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=50))
        self_ms = {event.key: event.self_cpu_time_total / 1000 for event in averages}
        total_ms = sum(self_ms.values())
        matrix_ms = sum(ms for name, ms in self_ms.items() if name in MATRIX_PRODUCT_OPS)
        top = sorted(self_ms.items(), key=lambda item: -item[1])[: args.rows]
        rows[dtype] = {"seconds_per_step": round(seconds, 3), "self_cpu_ms": round(total_ms, 1),
                       "matrix_product_share": round(matrix_ms / total_ms, 3),
                       "top_ops_self_ms": {name: round(ms, 1) for name, ms in top}}
        print(f"== {dtype}: matrix products (aten::mm, addmm, bmm, sdpa kernels) take "
              f"{rows[dtype]['matrix_product_share']:.0%} of the self CPU time")
    output.write(threads=torch.get_num_threads(), steps=rows,
                 bf16_over_fp32=round(rows["bf16"]["seconds_per_step"] / rows["fp32"]["seconds_per_step"], 2))
    return rows


def time_ops(args) -> dict:
    """Median time of each suspect op in fp32 and under bf16 autocast, and the bf16/fp32 ratio."""
    import statistics

    from adversarial_midibert.modeling_adv_midibert import relative_distance_scores
    from benchmarks.results_file import ResultsFile

    output = ResultsFile(args.output, vars(args))
    kwargs = preset_config_kwargs(args.preset)
    hidden, heads, length = kwargs["hidden_size"], kwargs["num_attention_heads"], args.seq_len
    positions = kwargs["max_position_embeddings"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, length, hidden, generator=g)
    linear = torch.nn.Linear(hidden, 4 * hidden)
    q, k, v = (torch.randn(args.batch_size, heads, length, hidden // heads, generator=g) for _ in range(3))
    table = torch.randn(2 * positions - 1, hidden // heads, generator=g)
    bias = torch.randn(args.batch_size, heads, length, length, generator=g)
    ops = {
        f"linear {hidden}->{4 * hidden}": lambda: linear(x),
        "relative_distance_scores (einsum)": lambda: relative_distance_scores(q, table, positions),
        "sdpa with an additive bias": lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu")
                                       else q.dtype)),
    }
    rows = {}
    for name, op in ops.items():
        for dtype in ("fp32", "bf16"):
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
            times = []
            with torch.no_grad(), autocast:
                op()  # warm-up
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    op()
                    times.append(time.perf_counter() - start)
            rows.setdefault(name, {})[f"{dtype}_ms"] = statistics.median(times) * 1000
        rows[name]["bf16/fp32"] = rows[name]["bf16_ms"] / rows[name]["fp32_ms"]
        print(f"{name:40s} fp32 {rows[name]['fp32_ms']:9.2f} ms  bf16 {rows[name]['bf16_ms']:9.2f} ms  "
              f"bf16/fp32 {rows[name]['bf16/fp32']:.2f}", flush=True)
    output.write(threads=torch.get_num_threads(), ops=rows)
    return rows


if __name__ == "__main__":
    main()
