#!/usr/bin/env python
"""Relative-position attention scores: the blocked skewing against the product-and-gather it replaced.

For each length it times the forward + backward of both terms of ``relative_key_query`` for one layer (queries and
keys of ``--batch_size`` x ``--heads`` heads of 64), median of ``--repeats``, both computations interleaved, and
counts their FLOPs with ``torch.utils.flop_counter.FlopCounterMode``:

- **gather** (the previous path, ``relative_distance_scores_by_gather``): each of Q and K times all 2L - 1 distance
  rows, then a gather into (L, L);
- **blocked** (``relative_distance_scores``): blocks of 64 rows times the L + 64 distance rows they meet, skewed
  into place by a reshape.

Then the FLOPs per token of one forward + backward of ``AdvMidiBertForMaskedLM`` (MLM and masker heads) at
``--model_preset`` and ``--model_length`` rows with each path, counted on the meta device. Both paths give the same
scores (``tests/test_modeling.py``). On CUDA the peak memory of each is printed too.

    python -m benchmarks.attention                                   # 256, 512, 1024, 2048 rows on the CPU
    python -m benchmarks.attention --device cuda --batch_size 8
    python -m benchmarks.attention --threads 1 --repeats 3 --output results/attention.json   # the figures of
    docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from unittest import mock

import torch

from adversarial_midibert import modeling_adv_midibert as modeling
from benchmarks.profiling import count_flops, step_flops_per_token
from benchmarks.results_file import ResultsFile

PATHS = {"gather": modeling.relative_distance_scores_by_gather, "blocked": modeling.relative_distance_scores}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--model_preset", default="base")
    p.add_argument("--model_length", type=int, default=1024)
    p.add_argument("--output", default=None, help="write the figures and settings to this JSON file")
    return p.parse_args(argv)


def relative_terms(path, query, key, table, max_positions):
    """Both terms of relative_key_query, as AdvMidiBertSelfAttention.relative_position_scores sums them."""
    scores = path(query, table, max_positions)
    return scores + path(key, table, max_positions, keys=True).transpose(-1, -2)


def main(argv=None):
    args = parse_args(argv)
    results = ResultsFile(args.output, vars(args))
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"relative_key_query scores of one layer, batch {args.batch_size} x {args.heads} heads of 64, forward + "
          f"backward, {device} ({torch.get_num_threads()} threads), load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'rows':>6} {'gather GFLOP':>13} {'blocked GFLOP':>14} {'ratio':>6} {'gather ms':>10} {'blocked ms':>11} "
          f"{'ratio':>6}" + ("  peak GiB gather / blocked" if device.type == "cuda" else ""))
    generator = torch.Generator().manual_seed(0)
    rows = []
    for length in args.lengths:
        shape = (args.batch_size, args.heads, length, 64)
        query = torch.randn(shape, generator=generator).to(device).requires_grad_()
        key = torch.randn(shape, generator=generator).to(device).requires_grad_()
        table = torch.randn(2 * length - 1, 64, generator=generator).to(device).requires_grad_()

        def step(path):
            relative_terms(path, query, key, table, length).square().mean().backward()

        flops = {name: count_flops(lambda path=path: step(path)) for name, path in PATHS.items()}
        times: dict[str, list[float]] = {name: [] for name in PATHS}
        peaks: dict[str, float] = {}
        for i in range(args.repeats + 1):  # the first round warms up
            for name, path in PATHS.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                step(path)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    peaks[name] = torch.cuda.max_memory_allocated() / 2**30
                if i:
                    times[name].append(time.perf_counter() - start)
                query.grad = key.grad = table.grad = None
        ms = {name: statistics.median(t) * 1000 for name, t in times.items()}
        line = (f"{length:>6} {flops['gather'] / 1e9:>13.2f} {flops['blocked'] / 1e9:>14.2f} "
                f"{flops['blocked'] / flops['gather']:>6.2f} {ms['gather']:>10.1f} {ms['blocked']:>11.1f} "
                f"{ms['blocked'] / ms['gather']:>6.2f}")
        if device.type == "cuda":
            line += f"  {peaks['gather']:.2f} / {peaks['blocked']:.2f}"
        print(line, flush=True)
        rows.append({"rows": length, "gflop_gather": flops["gather"] / 1e9, "gflop_blocked": flops["blocked"] / 1e9,
                     "flop_ratio": flops["blocked"] / flops["gather"], "ms_gather": ms["gather"],
                     "ms_blocked": ms["blocked"], "time_ratio": ms["blocked"] / ms["gather"],
                     "ms_all": {name: [t * 1000 for t in times[name]] for name in PATHS},
                     **({"peak_gib": peaks} if device.type == "cuda" else {})})

    from adversarial_midibert import AdvMidiBertConfig
    from adversarial_midibert.presets import preset_config_kwargs

    kwargs = preset_config_kwargs(args.model_preset)
    kwargs["max_position_embeddings"] = max(kwargs["max_position_embeddings"], args.model_length)
    config = AdvMidiBertConfig(**kwargs, attn_implementation="eager")
    per_token, per_step = {}, {kind: {} for kind in ("adversarial", "random")}
    for name, path in PATHS.items():
        with mock.patch.object(modeling, "relative_distance_scores", path):
            with torch.device("meta"), \
                    mock.patch.object(modeling.AdvMidiBertEmbeddings, "check_input_ids", lambda self, ids: None):
                model = modeling.AdvMidiBertForMaskedLM(config).train()
                ids = torch.zeros(1, args.model_length, 8, dtype=torch.long)
                mask = torch.ones(1, args.model_length, dtype=torch.long)

                def forward_backward():
                    out = model(ids, attention_mask=mask, labels=ids)
                    (out.loss + out.masker_scores.sum()).backward()

                per_token[name] = count_flops(forward_backward) / args.model_length
            for kind in per_step:
                per_step[kind][name] = step_flops_per_token(config, args.model_length, masking=kind)
    print(f"AdvMidiBertForMaskedLM ({args.model_preset}, {args.model_length} rows, MLM and masker heads), forward + "
          f"backward: gather {per_token['gather'] / 1e6:.1f} MFLOP/token, blocked {per_token['blocked'] / 1e6:.1f} "
          f"MFLOP/token ({per_token['blocked'] / per_token['gather']:.3f}x)")
    for kind, flops in per_step.items():
        print(f"{kind} pre-training step (profiling.step_flops_per_token): gather {flops['gather'] / 1e6:.1f} "
              f"MFLOP/token, blocked {flops['blocked'] / 1e6:.1f} MFLOP/token "
              f"({flops['blocked'] / flops['gather']:.3f}x)")
    results.write(
        relative_scores={"what": f"relative_key_query scores of one layer, batch {args.batch_size} x {args.heads} "
                                 "heads of 64, forward + backward; median of the repeats (ms_all: every timed run)",
                         "device": str(device), "threads": torch.get_num_threads(), "rows": rows},
        whole_model={"what": f"{args.model_preset} preset, {args.model_length} rows, eager attention, FLOPs of the "
                             "matrix products of forward + backward per token, counted on the meta device, with the "
                             "gather path (before) and the blocked skewing (after)",
                     "masked_lm_forward_backward": {
                         "what": "AdvMidiBertForMaskedLM, MLM and masker heads, one forward + backward",
                         "mflop_per_token_gather": per_token["gather"] / 1e6,
                         "mflop_per_token_blocked": per_token["blocked"] / 1e6,
                         "ratio": per_token["blocked"] / per_token["gather"]},
                     **{f"{kind}_step": {"what": f"one {kind} pre-training step (profiling.step_flops_per_token)",
                                         "mflop_per_token_gather": flops["gather"] / 1e6,
                                         "mflop_per_token_blocked": flops["blocked"] / 1e6,
                                         "ratio": flops["blocked"] / flops["gather"]}
                        for kind, flops in per_step.items()}})

if __name__ == "__main__":
    main()
