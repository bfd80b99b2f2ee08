#!/usr/bin/env python
"""The first run on a GPU, prepared: does pre-training work there, and how fast is it? (docs/scaling-gpu.md)

In one process, in a few minutes on one GPU (bf16 autocast, ``--preset base``, ``--seq_len 1024``):

1. **SDPA kernel**: which ``scaled_dot_product_attention`` kernel the encoder's attention runs (with its additive
   relative-position bias: flash attention takes no bias, so expect the memory-efficient or the cuDNN kernel).
2. **Steps**: random and adversarial pre-training steps (forward, backward, AdamW step), eager and compiled
   (``--torch_compile``'s per-layer compilation): steps/s, tokens/s, model FLOPs utilisation (FLOPs counted on the
   meta device, :func:`benchmarks.profiling.step_flops_per_token`, over the GPU's bf16 peak), peak memory
   against the traced estimate (:func:`benchmarks.profiling.estimate_step_memory`, the README's figure),
   the host syncs of one step (CUDA's sync debug mode; :func:`~benchmarks.profiling.count_host_reads` on
   CPU) and, for the adversarial step, how many notes share their masker score with another note of the segment
   (ties: the choice among them is made by the tie-break, not by the masker).
3. **FSDP**: two steps, the evaluation and a freezing pass with the step module wrapped by FSDP (one process, one
   device; each encoder layer its own unit, bf16 parameters): the passes that went around FSDP before.

Everything printed goes to ``--output`` (default ``results/gpu-smoke.json``), with the settings and versions.
``--dry_run`` runs the same code on the CPU with the tiny preset in a few seconds of compute (the tests run it, so the
script cannot rot); its figures say nothing about a GPU.

Usage on a GPU machine, from the repository root::

    python -m benchmarks.gpu_smoke                       # about 5 minutes on an H100/H200
    python -m benchmarks.gpu_smoke --dry_run --output /tmp/gpu-smoke.json   # CPU, tiny
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import socket
import time
import warnings

import torch

from adversarial_midibert.configuration_adv_midibert import AdvMidiBertConfig
from adversarial_midibert.mask_book import PackedMaskBook
from adversarial_midibert.masking import maskable_positions
from adversarial_midibert.modeling_adv_midibert import AdvMidiBertForMaskedLM, AdvMidiBertLayer
from adversarial_midibert.presets import PRESETS, preset_config_kwargs
from adversarial_midibert.pretraining import (
    AdversarialMLM,
    batch_to_device,
    freezing_pass,
    step_generator,
)
from adversarial_midibert.pretraining_evaluation import evaluate_pretraining
from adversarial_midibert.speed_and_memory import apply_acceleration
from benchmarks.pretrain_step import PEAK_BF16_TFLOPS, synthetic_batch
from benchmarks.profiling import count_host_reads, estimate_step_memory, step_flops_per_token
from benchmarks.results_file import ResultsFile

DEFAULT_OUTPUT = "results/gpu-smoke.json"
SDPA_OPS = ("flash_attention", "efficient_attention", "cudnn_attention", "attention_math", "flash_attention_for_cpu")
# The tiny settings of --dry_run: seconds on a CPU.
DRY_RUN = dict(preset="tiny", batch_size=2, seq_len=128, warmup=1, steps=2, compile_backend="eager")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry_run", action="store_true",
                   help="Run everything on the CPU with the tiny preset (tests); the figures mean nothing for a GPU.")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="Model size (default: base).")
    p.add_argument("--batch_size", type=int, default=None, help="Segments per step (default: 8).")
    p.add_argument("--seq_len", type=int, default=None, help="Rows per segment (default: 1024).")
    p.add_argument("--warmup", type=int, default=None, help="Untimed steps (compilation included; default 3).")
    p.add_argument("--steps", type=int, default=None, help="Timed steps per configuration (default 10).")
    p.add_argument("--compile_backend", default=None, help="torch.compile backend (default: inductor).")
    p.add_argument("--output", default=None, help=f"Results file (default: {DEFAULT_OUTPUT}; none with --dry_run).")
    args = p.parse_args(argv)
    defaults = DRY_RUN if args.dry_run else dict(preset="base", batch_size=8, seq_len=1024, warmup=3, steps=10,
                                                  compile_backend="inductor")
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.output is None and not args.dry_run:
        args.output = DEFAULT_OUTPUT
    for key in ("batch_size", "seq_len", "steps"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be >= 1, got {getattr(args, key)}")
    return args


def sdpa_kernels(model, batch, autocast) -> list[str]:
    """The ``scaled_dot_product_attention`` kernels (aten ops) one forward pass runs, as the profiler records them."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.no_grad(), autocast:
        model(batch["input_ids"], attention_mask=batch["attention_mask"], compute_logits=False)
    names = {event.name for event in prof.events() if "scaled_dot_product" in event.name}
    return sorted(name for name in names if any(op in name for op in SDPA_OPS)) or sorted(names)


@contextlib.contextmanager
def host_syncs(device: torch.device):
    """Count the host syncs of the block: CUDA's sync debug mode (every synchronising call warns) on a GPU, the calls
    that read tensor values back on the host on a CPU."""
    if device.type != "cuda":
        with count_host_reads() as calls:
            seen = {"calls": calls}
            yield seen
        seen["count"] = sum(calls.values())
        return
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        seen = {}
        try:
            yield seen
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    messages = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    seen.update(count=len(messages), calls={m.split("\n")[0][:120]: messages.count(m) for m in set(messages)})


def tied_scores(step: AdversarialMLM, batch: dict, autocast) -> dict:
    """Notes whose masker score equals another note's of the same segment (on the uncorrupted batch)."""
    with torch.no_grad(), autocast:
        scores = step(batch, score_only=True).masker_scores.float()
    notes = maskable_positions(batch["input_ids"], batch["attention_mask"])
    ordered = torch.sort(scores.masked_fill(~notes, float("nan")), dim=1).values
    tied = int((ordered[:, 1:] == ordered[:, :-1]).sum())  # notes - distinct scores, per segment, summed
    return {"tied_notes": tied, "notes": int(notes.sum()), "score_dtype": str(scores.dtype)}


def time_steps(step, optimizer, batch, book, device, autocast, args, tokens: int, compiled: bool) -> dict:
    """Warm-up, then ``args.steps`` timed steps; steps/s, tokens/s, peak memory and the host syncs of one step."""
    def one(i):
        with autocast:
            out = step(batch_to_device(batch, device, book), generator=step_generator(0, i, 0, device))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out

    for i in range(args.warmup):
        one(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(args.steps):
        out = one(args.warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    figures = {"ms_per_step": seconds * 1000, "steps_per_s": 1 / seconds, "tokens_per_s": tokens / seconds,
               "loss": float(out.loss.detach()), "host_syncs_per_step": None, "host_sync_calls": None}
    if device.type == "cuda" or not compiled:
        # One more step, forward and backward (on CPU the counter patches tensor methods, which would make dynamo
        # recompile and count its own tracing: compiled steps are not counted there).
        on_device = batch_to_device(batch, device, book)
        with host_syncs(device) as syncs:
            with autocast:
                out = step(on_device, generator=step_generator(0, -1, 0, device))
            out.loss.backward()
        optimizer.zero_grad(set_to_none=True)
        figures.update(host_syncs_per_step=syncs["count"], host_sync_calls=dict(syncs["calls"]))
    return {**figures,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def free_port() -> str:
    with socket.socket() as probe:  # other runs on the machine may hold a fixed port
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def fsdp_run(config, batch, device, autocast, args) -> dict:
    """Two training steps, the evaluation and a freezing pass through a one-process FSDP-wrapped step module."""
    from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision, ShardingStrategy
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port(), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        book = PackedMaskBook(args.batch_size, args.seq_len)
        inner = AdversarialMLM(AdvMidiBertForMaskedLM(config).to(device), mask_book=book)
        precision = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16,
                                   buffer_dtype=torch.bfloat16)
        step = FullyShardedDataParallel(
            inner, device_id=device, use_orig_params=True, sharding_strategy=ShardingStrategy.SHARD_GRAD_OP,
            auto_wrap_policy=functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={AdvMidiBertLayer}),
            mixed_precision=precision if device.type == "cuda" else None)
        optimizer = torch.optim.AdamW(step.parameters(), lr=1e-4)
        losses = []
        for i in range(2):
            with autocast:
                out = step(batch_to_device(batch, device, book), generator=step_generator(0, i, 0, device))
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(out.loss))
        eval_batch = {k: v.to(device) for k, v in batch.items() if k != "segment_id"}
        with autocast:
            results = evaluate_pretraining(step, [eval_batch])
            frozen = freezing_pass(step, [{k: v.to(device) for k, v in batch.items()}], book,
                                   generator=torch.Generator(device).manual_seed(0))
        return {"losses": losses, "eval_loss": results["eval_loss"], "eval_accuracy": results["eval_accuracy"],
                "eval_masker_spearman": results.get("eval_masker_spearman"), "frozen_fraction": frozen}
    finally:
        torch.distributed.destroy_process_group()


def main(argv=None):
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu_smoke.py needs a CUDA GPU (--dry_run runs it on the CPU, tiny)")
    output = ResultsFile(args.output, vars(args))
    device = torch.device("cpu" if args.dry_run else "cuda")
    kwargs = preset_config_kwargs(args.preset)
    if args.seq_len > kwargs["max_position_embeddings"]:
        raise SystemExit(f"--seq_len {args.seq_len} exceeds the {args.preset} preset's "
                         f"{kwargs['max_position_embeddings']}")
    config = AdvMidiBertConfig(**kwargs)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    tokens = args.batch_size * args.seq_len
    batch = synthetic_batch(args.batch_size, args.seq_len, config.vocab_sizes, "cpu", 0)  # on the host, as loaded
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)
    record = {"device": gpu, "preset": args.preset, "batch_size": args.batch_size, "seq_len": args.seq_len,
              "dtype": "bf16 autocast", "peak_bf16_tflops": peak_tflops, "steps": {}}
    print(f"{gpu}: preset {args.preset}, batch {args.batch_size} x {args.seq_len}, bf16 autocast", flush=True)

    torch.manual_seed(0)
    for compiled in (False, True):
        model = AdvMidiBertForMaskedLM(config).to(device)
        if compiled:
            torch._dynamo.reset()
            apply_acceleration(model, torch_compile=True, torch_compile_backend=args.compile_backend)
        else:
            record["sdpa_kernels"] = sdpa_kernels(model, batch_to_device(batch, device), autocast)
            print(f"sdpa kernel(s): {', '.join(record['sdpa_kernels'])}", flush=True)
        for masking in ("random", "adversarial"):
            name = f"{masking} {'compiled' if compiled else 'eager'}"
            book = PackedMaskBook(args.batch_size, args.seq_len) if masking == "adversarial" else None
            step = AdversarialMLM(model, mask_book=book, masking=masking).to(device).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            figures = time_steps(step, optimizer, batch, book, device, autocast, args, tokens, compiled)
            flops = step_flops_per_token(config, args.seq_len, masking) * figures["tokens_per_s"]
            figures.update(tflops=flops / 1e12, mfu=flops / (peak_tflops * 1e12) if peak_tflops else None,
                           estimate_peak_gib=estimate_step_memory(config, args.batch_size, args.seq_len, "bf16", "sdpa",
                                                                  masking).peak / 2**30)
            if masking == "adversarial":
                figures["masker_ties"] = tied_scores(step, batch_to_device(batch, device), autocast)
            record["steps"][name] = figures
            memory = (f"peak {figures['peak_gib']:.2f} GiB" if figures["peak_gib"] is not None else "peak n/a") + \
                f" (estimate {figures['estimate_peak_gib']:.2f} GiB)"
            mfu = f", MFU {figures['mfu']:.1%}" if figures["mfu"] is not None else ""
            ties = (f", tied masker scores {figures['masker_ties']['tied_notes']} of {figures['masker_ties']['notes']} "
                    "notes" if "masker_ties" in figures else "")
            print(f"{name:22s} {figures['steps_per_s']:7.2f} steps/s {figures['tokens_per_s']:10.0f} tokens/s "
                  f"{figures['tflops']:7.2f} TFLOP/s{mfu}, {memory}, host syncs per step "
                  f"{'n/a' if figures['host_syncs_per_step'] is None else figures['host_syncs_per_step']}{ties}",
                  flush=True)
        del model
    for masking in ("random", "adversarial"):
        eager, compiled = record["steps"][f"{masking} eager"], record["steps"][f"{masking} compiled"]
        record.setdefault("compiled_speedup", {})[masking] = compiled["steps_per_s"] / eager["steps_per_s"]
    print("compiled/eager steps/s: " + ", ".join(f"{k} {v:.2f}" for k, v in record["compiled_speedup"].items()))
    record["fsdp"] = fsdp_run(config, batch, device, autocast, args)
    print(f"FSDP (one device): losses {record['fsdp']['losses']}, eval_loss {record['fsdp']['eval_loss']:.4f}, "
          f"frozen fraction after the freezing pass {record['fsdp']['frozen_fraction']:.3f}", flush=True)
    output.write(**record)
    return record


if __name__ == "__main__":
    main()
