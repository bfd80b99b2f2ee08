#!/usr/bin/env python
"""Cost of one pre-training step: adversarial vs. its detached and cached-scores variants vs. random and bar masking.

All five run through :class:`adversarial_midibert.pretraining.AdversarialMLM` on the same model and the same synthetic
batch (full-length segments), in one process: warm-up, then several timed rounds of forward + backward + optimizer step,
the variants interleaved within each round (robust to a busy machine), median reported. Prints seconds per step, tokens
(notes) per second and the ratios adversarial/random, detached/random and cached/random. Targets: adversarial/random
<= 2.05 (two forward + backward passes through the encoder are the floor), detached/random <= 1.4, cached/random <= 1.2
(the adversary with cached scores, ``masker_scores_from="cache"``: one encoder pass that also runs the masker head, the
scores copied to the host and back into the cache; its cache is filled by the warm-up steps).

On CUDA it also prints the model FLOPs utilisation and the peak memory. The FLOPs of each variant's step are
counted, not estimated by a formula: ``torch.utils.flop_counter.FlopCounterMode`` over the step's forward and
backward passes on the ``meta`` device (:func:`benchmarks.profiling.step_flops_per_token`), the relative
position scores included (a plain BERT-base MLM step, ``6 N + 12 layers hidden L``, is about 638 MFLOP per token at
L = 1024; this model's relative positions add two terms of about ``L (L + 64)`` products per head and layer).

``--estimate_memory`` prints the peak memory of each variant's step traced on fake tensors
(:func:`benchmarks.profiling.estimate_step_memory`: weights, gradients, AdamW states and every activation
alive, bf16 autocast, CUDA's memory-efficient attention for sdpa) with and without gradient checkpointing, for each
of ``--estimate_attention`` (default: sdpa and eager); without a GPU it stops there, on CUDA the measured peaks are
printed next to the estimates. ``--output FILE.json`` writes everything printed, with the settings and the load.

``--dtype fp32 bf16`` times both precisions in one run and ``--torch_compile`` adds the compiled encoder layers
(``--torch_compile`` of the training scripts) beside the eager ones: every setup is interleaved in the same rounds, and
the time ratios of each variant to the first setup (fp32 eager) are printed.

Examples::

    python -m benchmarks.pretrain_step --preset small --batch_size 8 --seq_len 256
    python -m benchmarks.pretrain_step --preset base --batch_size 8 --seq_len 1024 --dtype bf16 --estimate_memory \
        --output results/memory-estimate.json
    python -m benchmarks.pretrain_step --preset base --batch_size 16 --seq_len 1024 --device cuda --dtype bf16
    python -m benchmarks.pretrain_step --preset small --batch_size 4 --seq_len 256 --torch_compile \
        --output results/pretrain-step-compile-small.json
    python -m benchmarks.pretrain_step --preset base --batch_size 1 --seq_len 512 --dtype fp32 bf16
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch

from adversarial_midibert.constants import BOS_ID, EOS_ID, NUM_ATTRIBUTES
from adversarial_midibert.mask_book import MaskerScoreCache
from adversarial_midibert.presets import PRESETS, preset_config_kwargs
from adversarial_midibert.pretraining import AdversarialMLM, step_generator
from adversarial_midibert.speed_and_memory import apply_acceleration, enable_activation_checkpointing
from benchmarks.profiling import step_flops_per_token
from benchmarks.results_file import ResultsFile

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}

# (masking, detached masker, where the masker scores come from)
VARIANTS = (("adversarial", False, "pass"), ("adversarial", True, "pass"), ("adversarial", False, "cache"),
            ("random", False, "pass"), ("bar", False, "pass"))


def variant_name(masking: str, detach: bool, scores_from: str) -> str:
    return masking + (" (detached)" if detach else "") + (" (cached scores)" if scores_from == "cache" else "")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="small", choices=sorted(PRESETS), help="Model size.")
    p.add_argument("--batch_size", type=int, default=8, help="Segments per step.")
    p.add_argument("--seq_len", type=int, default=None, help="Rows per segment (default: the preset's maximum).")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda.")
    p.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="Autocast dtype(s) of the step; two time both in one run (ratio bf16/fp32).")
    p.add_argument("--torch_compile", action="store_true",
                   help="Also time the steps with the encoder layers compiled (--torch_compile of the training "
                        "scripts), interleaved with the eager ones (ratio compiled/eager).")
    p.add_argument("--torch_compile_backend", default="inductor", help="Backend of --torch_compile.")
    p.add_argument("--warmup", type=int, default=2, help="Untimed steps per variant.")
    p.add_argument("--repeats", type=int, default=5, help="Timed steps per variant (median reported).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's.")
    p.add_argument("--attn_implementation", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--gradient_checkpointing", action="store_true", help="Time the steps with activation "
                                                                         "checkpointing.")
    p.add_argument("--estimate_memory", action="store_true",
                   help="Print the traced peak memory of each step (no GPU needed); on a CPU, stop there.")
    p.add_argument("--estimate_attention", nargs="+", default=["sdpa", "eager"], choices=["sdpa", "eager"],
                   help="Attention implementations whose memory --estimate_memory traces (default: both).")
    p.add_argument("--output", default=None, help="Write the figures and settings to this JSON file.")
    return p.parse_args(argv)


def synthetic_batch(batch_size: int, seq_len: int, vocab, device, seed: int):
    g = torch.Generator().manual_seed(seed)
    v = torch.tensor(vocab)
    ids = (torch.rand(batch_size, seq_len, NUM_ATTRIBUTES, generator=g) * (v - 4)).long() + 4
    ids[:, :, 0] = torch.sort(ids[:, :, 0] % 16, dim=1).values + 4  # bars ascend, as in real segments
    ids[:, 0], ids[:, -1] = BOS_ID, EOS_ID
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long, device=device),
        "segment_id": torch.arange(batch_size, device=device),
    }


def print_memory_estimates(config, args, seq_len: int) -> list:
    """Traced peak memory of every variant, for each of ``--estimate_attention``, with and without gradient
    checkpointing; returns ``(variant name, MemoryEstimate)`` pairs."""
    from benchmarks.profiling import estimate_step_memory

    estimates = []
    for attention in args.estimate_attention:
        for checkpointing in (False, True):
            for masking, detach, scores_from in VARIANTS:
                name = variant_name(masking, detach, scores_from)
                estimate = estimate_step_memory(config, args.batch_size, seq_len, dtype=args.dtype[-1],
                                                attention=attention, masking=masking, detach_masker=detach,
                                                gradient_checkpointing=checkpointing, masker_scores_from=scores_from)
                print(f"estimate {name:24s} {estimate.format()}", flush=True)
                estimates.append((name, estimate))
    return estimates


def estimate_record(name: str, estimate) -> dict:
    """One traced estimate as plain data for the results file (bytes, and the peak in GiB)."""
    return {"variant": name, **estimate.settings, "peak_gib": estimate.peak / 2**30, "peak": estimate.peak,
            "parameters": estimate.parameters, "gradients": estimate.gradients,
            "optimizer_states": estimate.optimizer_states, "activations_peak": estimate.activations_peak}


def main(argv=None):
    args = parse_args(argv)
    output = ResultsFile(args.output, vars(args))
    from adversarial_midibert.configuration_adv_midibert import AdvMidiBertConfig
    from adversarial_midibert.modeling_adv_midibert import AdvMidiBertForMaskedLM

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs = preset_config_kwargs(args.preset)
    seq_len = args.seq_len or kwargs["max_position_embeddings"]
    if seq_len > kwargs["max_position_embeddings"]:
        raise SystemExit(f"--seq_len {seq_len} exceeds the {args.preset} preset's {kwargs['max_position_embeddings']}")
    torch.manual_seed(args.seed)
    # The default tokenizer's vocabulary sizes (the config's default); only their sizes matter (the MLM heads' cost).
    config = AdvMidiBertConfig(attn_implementation=args.attn_implementation, **kwargs)
    flops_per_token = {variant_name(*variant): step_flops_per_token(config, seq_len, *variant) for variant in VARIANTS}
    print(f"model FLOPs per token of a step (forward + backward, counted on the meta device), preset {args.preset}, "
          f"{seq_len} rows: " + ", ".join(f"{name} {f / 1e6:.1f} M" for name, f in flops_per_token.items()))
    record = {"flops_per_token": {"what": "model FLOPs of a step (forward + backward) per token, counted on the "
                                          "meta device", "preset": args.preset, "seq_len": seq_len,
                                  "mflop_per_token": {name: f / 1e6 for name, f in flops_per_token.items()}}}
    estimates = {}
    if args.estimate_memory:
        traced = print_memory_estimates(config, args, seq_len)
        record["memory_estimates"] = {
            "what": "peak memory of one training step traced on fake tensors (weights, gradients, AdamW states and "
                    "every activation alive; CUDA context and allocator fragmentation not counted); bytes, and "
                    "peak_gib = peak / 2**30",
            "estimates": [estimate_record(name, e) for name, e in traced]}
        estimates = {name: e for name, e in traced if e.settings["attention"] == args.attn_implementation
                     and e.settings["gradient_checkpointing"] == args.gradient_checkpointing}
        if device.type != "cuda":
            output.write(device=str(device), **record)
            return estimates
    model = AdvMidiBertForMaskedLM(config).to(device)
    if args.gradient_checkpointing:
        enable_activation_checkpointing(model)
    models = {"eager": model}
    if args.torch_compile:  # the same weights, the encoder layers compiled
        models["compiled"] = apply_acceleration(copy.deepcopy(model), torch_compile=True,
                                                torch_compile_backend=args.torch_compile_backend)
    batch = synthetic_batch(args.batch_size, seq_len, config.vocab_sizes, device, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    tokens = args.batch_size * seq_len

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    print(f"preset {args.preset} ({n_params / 1e6:.2f} M parameters), batch {args.batch_size} x {seq_len}, "
          f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"dtype {' and '.join(args.dtype)}, threads {torch.get_num_threads()}, {args.warmup} warm-up + "
          f"{args.repeats} repeats{', eager and compiled' if args.torch_compile else ''}")
    # One setup per (dtype, eager/compiled); its variants named "<variant>" alone when there is one setup.
    setups = [(dtype, mode) for dtype in args.dtype for mode in models]
    steps, autocasts, optimizers = {}, {}, {}
    for dtype, mode in setups:
        suffix = "" if len(setups) == 1 else f" [{dtype}{', compiled' if mode == 'compiled' else ''}]"
        optimizers[(dtype, mode)] = torch.optim.AdamW(models[mode].parameters(), lr=1e-4)
        for masking, detach, scores_from in VARIANTS:
            name = variant_name(masking, detach, scores_from) + suffix
            cache = MaskerScoreCache(args.batch_size, seq_len) if scores_from == "cache" else None
            steps[name] = AdversarialMLM(models[mode], masking=masking, masker_grad_scale=0.0 if detach else 1.0,
                                         masker_scores_from=scores_from, score_cache=cache).to(device).train()
            autocasts[name] = (dtype, mode)
    times: dict[str, list[float]] = {name: [] for name in steps}
    peak: dict[str, float] = {}
    # Interleaved: every round times one step of each variant, so that a slow patch of the machine (other
    # processes, clock changes) hits all variants alike; the median over rounds is reported.
    for i in range(args.warmup + args.repeats):
        for name, step in steps.items():
            dtype, mode = autocasts[name]
            optimizer = optimizers[(dtype, mode)]
            gen = step_generator(args.seed, i, 0, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync()
            t0 = time.perf_counter()
            with (torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()):
                out = step(batch, generator=gen)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
            if device.type == "cuda":
                peak[name] = max(peak.get(name, 0.0), torch.cuda.max_memory_allocated(device) / 2**30)
    results, record["steps"] = {}, {}
    for name in steps:
        sec = statistics.median(times[name])
        results[name] = sec
        record["steps"][name] = {"median_ms": sec * 1000, "all_ms": [t * 1000 for t in times[name]],
                                 "tokens_per_second": tokens / sec}
        spread = f"(min {min(times[name]) * 1000:.0f}, max {max(times[name]) * 1000:.0f})"
        line = f"{name:44s} {sec * 1000:9.1f} ms/step {spread:22s} {tokens / sec:10.0f} tokens/s"
        variant = name.split(" [")[0]
        if device.type == "cuda":
            flops = flops_per_token[variant] * tokens / sec
            gpu = torch.cuda.get_device_name(device)
            peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)
            mfu = f"  MFU {flops / (peak_tflops * 1e12):.1%}" if peak_tflops and autocasts[name][0] == "bf16" else ""
            line += f"  {flops / 1e12:7.1f} TFLOP/s{mfu}  peak mem {peak[name]:.2f} GiB"
            record["steps"][name].update(tflops_per_second=flops / 1e12, peak_gib=peak[name], gpu=gpu)
            if mfu:
                record["steps"][name]["mfu"] = flops / (peak_tflops * 1e12)
            if variant in estimates and autocasts[name][0] == args.dtype[-1]:
                line += f" (estimate {estimates[variant].peak / 2**30:.2f} GiB)"
                record["steps"][name]["estimate_peak_gib"] = estimates[variant].peak / 2**30
        print(line, flush=True)
    if len(setups) > 1:
        record["ratios_between_setups"] = ratios = {}
        for variant in (variant_name(*v) for v in VARIANTS):
            for dtype, mode in setups[1:]:
                first = f"{variant} [{setups[0][0]}]"
                other = f"{variant} [{dtype}{', compiled' if mode == 'compiled' else ''}]"
                key = f"{other} / {first}"
                ratios[key] = results[other] / results[first]
                print(f"time ratio {key:70s} {ratios[key]:.2f}")
        results = {name.split(" [")[0]: sec for name, sec in results.items() if name.endswith(f"[{setups[0][0]}]")}
    base = results["random"]
    print(f"ratio adversarial/random = {results['adversarial'] / base:.2f} (target <= 2.05)")
    print(f"ratio detached/random    = {results['adversarial (detached)'] / base:.2f} (target <= 1.4)")
    print(f"ratio cached/random      = {results['adversarial (cached scores)'] / base:.2f} (target <= 1.2)")
    print(f"ratio bar/random         = {results['bar'] / base:.2f}")
    output.write(device=str(device), threads=torch.get_num_threads(), n_parameters=n_params, **record,
                 ratios={"adversarial/random": results["adversarial"] / base,
                         "detached/random": results["adversarial (detached)"] / base,
                         "cached/random": results["adversarial (cached scores)"] / base,
                         "bar/random": results["bar"] / base})
    return results


if __name__ == "__main__":
    main()
