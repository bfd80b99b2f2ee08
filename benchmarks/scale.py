#!/usr/bin/env python
"""How building and pre-training scale with the corpus: 10 k, 100 k and 1 M segments, time linear, memory flat.

A synthetic corpus is grown from real files: copies of POP909 songs, each transposed by -5..+6 semitones and
shifted by whole bars, written as MIDI files under ``--work_dir`` (once, reused). At each size (a prefix of that
pool of files with about that many segments of ``--max_seq_len`` rows; 64 by default so that the 1 M point runs in
minutes on a 2-core machine) it measures, each in its own process:

1. **build**: ``build_dataset(..., output_dir=...)`` with ``--num_proc`` workers (parse, tokenise, segment, write
   shards): seconds, notes per second, peak memory of the process tree (PSS, sampled);
2. **train**: ``examples/pretrain.py --streaming`` (tiny preset, ``--train_steps`` steps of 32 segments, no
   freezing pass): seconds (start-up included) and peak RSS of the training process;
3. **freezing pass**: one :func:`~adversarial_midibert.pretraining.freezing_pass` over the whole streamed training
   split into the on-disk mask book, with a one-layer model of width 16 (the pass's compute is the model's; this
   measures the streaming and the book): seconds and peak RSS;
4. **mask book**: bytes per process of the one-byte-per-position book on the accelerator (before), of the packed
   book in memory (one bit per position and two counts per segment) and of the on-disk book (read per batch: none
   held by the process), with its file size.

Example (about 20 minutes on a busy 2-core machine, ~3 GB of disk under --work_dir)::

    python -m benchmarks.scale --data_root ../shared/data --work_dir /tmp/scale --output results/scale.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]

SIZES = (10_000, 100_000, 1_000_000)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_root", default=os.environ.get("ADV_MIDIBERT_DATA", "../shared/data"))
    p.add_argument("--work_dir", default="/tmp/adv_midibert_scale")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="segments per corpus")
    p.add_argument("--max_seq_len", type=int, default=64)
    p.add_argument("--num_proc", type=int, default=2)
    p.add_argument("--train_steps", type=int, default=50)
    p.add_argument("--keep", action="store_true", help="keep the built datasets (the MIDI pool is always kept)")
    p.add_argument("--output", default=None, help="write the figures and settings to this JSON file")
    p.add_argument("--phase", default=None, help=argparse.SUPPRESS)  # internal: run one measurement
    p.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    p.add_argument("--files", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- corpus
def _write_copy(task) -> int:
    source, target, shift, bars = task
    import symusic

    score = symusic.Score(source)
    score = score.shift_pitch(shift).shift_time(bars * 4 * score.ticks_per_quarter)
    target.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(str(target))
    return score.note_num()


def grow_pool(args, notes_needed: int) -> list[Path]:
    """MIDI copies of POP909 songs under work_dir/midi until they hold ``notes_needed`` notes (reused)."""
    pool = Path(args.work_dir) / "midi"
    listing = Path(args.work_dir) / "pool.json"
    entries = json.loads(listing.read_text()) if listing.is_file() else []
    total = sum(n for _, n in entries)
    sources = sorted(Path(args.data_root).glob("POP909/*/*.mid"))
    sources = [s for s in sources if s.parent.name == s.stem]
    if not sources:
        raise SystemExit(f"{args.data_root}: no POP909 files")
    start = time.perf_counter()
    i = len(entries)
    with multiprocessing.Pool(args.num_proc) as pool_workers:
        while total < notes_needed:
            batch = []
            for j in range(i, i + 512):
                copy, song = divmod(j, len(sources))
                target = pool / f"{j // 1000:04d}" / f"{j:07d}.mid"
                batch.append((str(sources[song]), target, (copy % 12) - 5, copy // 12))
            for (_, target, _, _), notes in zip(batch, pool_workers.map(_write_copy, batch)):
                entries.append((str(target), notes))
                total += notes
            i += len(batch)
    listing.write_text(json.dumps(entries))
    if time.perf_counter() - start > 1:
        print(f"pool: {len(entries)} files, {total} notes ({time.perf_counter() - start:.0f} s to grow)", flush=True)
    return entries


def files_for(entries, segments: int, max_seq_len: int) -> list[str]:
    """A prefix of the pool with about ``segments`` segments (estimated from the notes per file)."""
    per_segment = max_seq_len - 2
    out, estimate = [], 0
    for path, notes in entries:
        if estimate >= segments:
            break
        out.append(path)
        estimate += -(-notes // per_segment)
    return out


# ----------------------------------------------------------------------------------------------- phases
def phase_build(args) -> dict:
    from adversarial_midibert.data.builder import build_dataset
    from adversarial_midibert.tokenization_octuple import OctupleTokenizer
    from benchmarks.process_memory import PeakMemory

    files = json.loads(Path(args.files).read_text())
    with PeakMemory(interval=0.05) as memory:
        start = time.perf_counter()
        ds = build_dataset(files, task_type="pretrain", splits=(0.99, 0.01, 0.0), tokenizer=OctupleTokenizer(
            max_seq_len=args.max_seq_len), num_proc=args.num_proc, output_dir=args.dataset, task="scale")
        seconds = time.perf_counter() - start
    report = ds.build_report["splits"]
    return {"seconds": seconds, "notes": sum(c["notes"] for c in report.values()),
            "segments": sum(c["segments"] for c in report.values()), "train_segments": report["train"]["segments"],
            "peak_pss": memory.peak, "files": len(files)}


def phase_freeze(args) -> dict:
    import torch

    from adversarial_midibert.configuration_adv_midibert import AdvMidiBertConfig
    from adversarial_midibert.data.collators import pad_octuple_batch
    from adversarial_midibert.data.streaming import StreamingBatches, StreamingDataset
    from adversarial_midibert.mask_book import PackedMaskBook
    from adversarial_midibert.modeling_adv_midibert import AdvMidiBertForMaskedLM
    from adversarial_midibert.pretraining import freezing_pass

    stream = StreamingDataset(args.dataset)
    # A one-layer model of width 16: the pass's compute is the model's; this measures the streaming and the book.
    torch.manual_seed(0)
    model = AdvMidiBertForMaskedLM(AdvMidiBertConfig(
        vocab_sizes=list(stream.tokenizer.vocab_sizes), hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
        intermediate_size=32, attribute_embedding_size=8, masker_hidden_size=8,
        max_position_embeddings=args.max_seq_len))
    num = stream.num_rows("train")
    book_dir = Path(args.dataset).parent / (Path(args.dataset).name + "-mask_book")
    shutil.rmtree(book_dir, ignore_errors=True)
    book = PackedMaskBook(num, args.max_seq_len, directory=book_dir)
    batches = StreamingBatches(stream.split("train"), 256, pad_octuple_batch, shuffle_buffer_size=0)
    start = time.perf_counter()
    fraction = freezing_pass(model, batches.all_batches(), book, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in book_dir.iterdir())
    result = {"seconds": seconds, "frozen_fraction": fraction, "book_in_memory": book.nbytes(), "book_file": size,
              "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    shutil.rmtree(book_dir, ignore_errors=True)
    return result


def run_phase(args, phase: str, dataset: Path, files: Path | None = None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.scale", "--phase", phase, "--dataset", str(dataset), "--max_seq_len",
           str(args.max_seq_len), "--num_proc", str(args.num_proc)] + (["--files", str(files)] if files else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if out.returncode:
        raise SystemExit(f"{phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_training(args, dataset: Path) -> dict:
    output = dataset.parent / (dataset.name + "-run")
    shutil.rmtree(output, ignore_errors=True)
    cmd = [sys.executable, str(_ROOT / "examples" / "pretrain.py"), "--streaming", "--dataset", str(dataset),
           "--output_dir", str(output), "--preset", "tiny", "--config_overrides",
           f"max_position_embeddings={args.max_seq_len}", "--max_train_steps", str(args.train_steps),
           "--per_device_train_batch_size", "32", "--freeze_every", "0", "--max_eval_samples", "64",
           "--logging_steps", "1000", "--seed", "0"]
    log = dataset.parent / (dataset.name + "-train.log")
    start = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=_env())
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"training failed:\n{log.read_text()[-3000:]}")
    shutil.rmtree(output, ignore_errors=True)
    return {"seconds": seconds, "max_rss": usage.ru_maxrss * 1024}


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ACCELERATE_USE_CPU="1")
    return env


def main(argv=None):
    args = parse_args(argv)
    if args.phase:
        result = {"build": phase_build, "freeze": phase_freeze}[args.phase](args)
        print(json.dumps(result))
        return
    from benchmarks.results_file import ResultsFile

    results = ResultsFile(args.output, {k: v for k, v in vars(args).items() if k not in ("phase", "dataset", "files")})
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs; "
          f"segments of {args.max_seq_len} rows; build with {args.num_proc} processes", flush=True)
    entries = grow_pool(args, int(max(args.sizes) * (args.max_seq_len - 2) * 1.05))
    rows = []
    for size in sorted(args.sizes):
        files = files_for(entries, size, args.max_seq_len)
        listing = work / f"files-{size}.json"
        listing.write_text(json.dumps(files))
        dataset = work / f"dataset-{size}"
        shutil.rmtree(dataset, ignore_errors=True)
        build = run_phase(args, "build", dataset, listing)
        train = run_training(args, dataset)
        freeze = run_phase(args, "freeze", dataset)
        n, length = build["train_segments"], args.max_seq_len
        build["notes_per_second"] = build["notes"] / build["seconds"]
        row = {"size": size, "build": build, "train": train, "freeze": freeze,
               "book_dense": n * length, "book_packed": n * (-(-length // 8) + 8)}
        rows.append(row)
        print(f"{build['segments']:>9} segments ({build['files']} files, {build['notes']} notes): "
              f"build {build['seconds']:7.1f} s, {build['notes'] / build['seconds'] / 1e6:.3f} M notes/s, peak "
              f"{build['peak_pss'] / 2**20:.0f} MiB | train {args.train_steps} steps {train['seconds']:.1f} s, peak "
              f"RSS {train['max_rss'] / 2**20:.0f} MiB | freezing pass {freeze['seconds']:.1f} s, peak RSS "
              f"{freeze['max_rss'] / 2**20:.0f} MiB | mask book per process: {row['book_dense'] / 2**20:.1f} MiB "
              f"as bytes on the accelerator (before), {row['book_packed'] / 2**20:.1f} MiB packed in memory, "
              f"{freeze['book_in_memory']} B on disk (file {freeze['book_file'] / 2**20:.1f} MiB)", flush=True)
        if not args.keep:
            shutil.rmtree(dataset, ignore_errors=True)
    growth = []
    for a, b in zip(rows, rows[1:]):
        ratios = {"from": a["size"], "to": b["size"], "segments": b["build"]["segments"] / a["build"]["segments"],
                  "build_time": b["build"]["seconds"] / a["build"]["seconds"],
                  "freezing_time": b["freeze"]["seconds"] / a["freeze"]["seconds"],
                  "build_memory": b["build"]["peak_pss"] / a["build"]["peak_pss"],
                  "training_rss": b["train"]["max_rss"] / a["train"]["max_rss"],
                  "freezing_rss": b["freeze"]["max_rss"] / a["freeze"]["max_rss"]}
        growth.append(ratios)
        print(f"{a['size']} -> {b['size']}: segments x{ratios['segments']:.1f}; build time x"
              f"{ratios['build_time']:.1f}, freezing pass x{ratios['freezing_time']:.1f}; build memory x"
              f"{ratios['build_memory']:.2f}, training RSS x{ratios['training_rss']:.2f}, freezing RSS x"
              f"{ratios['freezing_rss']:.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results.write(what="per size: build (seconds, notes/s, peak PSS of the process tree in bytes), training "
                       "(pretrain.py --streaming, seconds with start-up, peak RSS in bytes), freezing pass (seconds, "
                       "peak RSS), mask book per process in bytes: book_dense = one byte per position on the "
                       "accelerator (before), book_packed = packed in memory, freeze.book_in_memory = the on-disk "
                       "book's bytes held by the process, freeze.book_file = its file size",
                  rows=rows, growth=growth)


if __name__ == "__main__":
    main()
