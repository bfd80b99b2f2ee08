#!/usr/bin/env python
"""End-to-end dataset build, old path against new path in the same run: MIDI files -> a saved dataset folder.

- **old**: ``build_dataset`` as it was at commit ``--old_commit`` (``Dataset.map`` over the files, filters, then
  ``save_to_disk``: every segment is materialised before saving), loaded from git history, then ``save``.
- **new**: ``build_dataset(..., output_dir=...)``: shards written as they are made by ``--num_proc`` worker
  processes (``adversarial_midibert.data.shards``).

Both build the same recipe (default ``pretrain``: POP1K7 + POP909 + Pianist8 + EMOPIA) with the same tokenizer into
fresh folders under ``--work_dir``; the runs alternate (old, new, old, new...) so that a change in the machine's load
hits both. Prints, per run: seconds, notes per second (notes of all splits / wall time, parse + tokenise + segment +
write), the peak memory of the process tree (PSS, sampled every 20 ms), and the new/old speed ratio; checks that
both folders hold the same segments; and prints the load average before and after (the figures are only comparable
within one run on a busy machine).

Example::

    python -m benchmarks.build --data_root ../shared/data --num_proc 2
    python -m benchmarks.build --data_root ../shared/data --num_proc 2 --repeats 2 --output results/build.json
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.process_memory import PeakMemory
from benchmarks.results_file import ResultsFile

_ROOT = Path(__file__).resolve().parents[1]

OLD_COMMIT = "28c2e76"  # the last commit whose build_dataset ran Dataset.map and materialised the splits


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_root", default=os.environ.get("ADV_MIDIBERT_DATA", "../shared/data"))
    p.add_argument("--task", default="pretrain", help="recipe to build (default: pretrain)")
    p.add_argument("--max_files", type=int, default=None, help="build at most this many files (default: all)")
    p.add_argument("--max_seq_len", type=int, default=1024)
    p.add_argument("--num_proc", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="runs of each path (alternating)")
    p.add_argument("--work_dir", default=None, help="where the folders are built (default: a temporary folder)")
    p.add_argument("--old_commit", default=OLD_COMMIT, help="git commit of the old build path")
    p.add_argument("--skip_old", action="store_true", help="time the new path only")
    p.add_argument("--output", default=None, help="write the figures and settings to this JSON file")
    return p.parse_args(argv)


def load_old_builder(commit: str):
    """``adversarial_midibert/data/builder.py`` at ``commit``, imported as a module of the current package."""
    source = subprocess.run(["git", "show", f"{commit}:adversarial_midibert/data/builder.py"], cwd=_ROOT,
                            capture_output=True, text=True, check=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="old_builder_"))
    path = folder / "builder_old.py"
    path.write_text(source)
    name = f"adversarial_midibert.data._builder_{commit}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "adversarial_midibert.data"
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    args = parse_args(argv)
    output = ResultsFile(args.output, vars(args))
    from adversarial_midibert.data import load_task_dataset
    from adversarial_midibert.data.builder import build_dataset
    from adversarial_midibert.data.recipes import resolve_recipe
    from adversarial_midibert.tokenization_octuple import OctupleTokenizer

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="build_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    spec = resolve_recipe(args.task, args.data_root)
    common = dict(task_type=spec.task_type, token_label_fn=spec.token_label_fn, splits=spec.splits, seed=0,
                  tokenizer=OctupleTokenizer(max_seq_len=args.max_seq_len), num_proc=args.num_proc,
                  max_files=args.max_files, label_names=spec.label_names, hidden_attributes=spec.hidden_attributes,
                  task=spec.task, extra_info=spec.extra_info)
    old = None if args.skip_old else load_old_builder(args.old_commit)

    def run(path: str, out: Path) -> dict:
        shutil.rmtree(out, ignore_errors=True)
        records = [{"path": r.path, "piece_id": r.piece_id, "label": r.label} for r in spec.records]
        with PeakMemory() as memory:
            start = time.perf_counter()
            if path == "old":
                ds = old.build_dataset(records, **common)
                old.save(ds, out)
            else:
                ds = build_dataset(records, **common, output_dir=out)
            seconds = time.perf_counter() - start
        notes = sum(c["notes"] for c in ds.build_report["splits"].values())
        segments = sum(c["segments"] for c in ds.build_report["splits"].values())
        return {"seconds": seconds, "notes": notes, "segments": segments, "peak_pss": memory.peak,
                "skipped": len(ds.build_report["skipped"])}

    print(f"recipe {args.task}: {len(spec.records)} files{f' (at most {args.max_files})' if args.max_files else ''}, "
          f"segments of {args.max_seq_len} rows, num_proc {args.num_proc}, {os.cpu_count()} CPUs")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(args.repeats):
        for path in (() if args.skip_old else ("old",)) + ("new",):
            r = run(path, work / f"{path}-{i}")
            results[path].append(r)
            print(f"{path}: {r['seconds']:7.2f} s  {r['notes'] / r['seconds'] / 1e6:6.3f} M notes/s  "
                  f"({r['notes']} notes, {r['segments']} segments, {r['skipped']} files skipped)  "
                  f"peak memory (PSS) {r['peak_pss'] / 2**20:6.0f} MiB", flush=True)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    new_rate = statistics.median(r["notes"] / r["seconds"] for r in results["new"])
    print(f"new: median {new_rate / 1e6:.3f} M notes/s")
    summary = {"recipe_files": len(spec.records), "new_median_notes_per_second": new_rate}
    if not args.skip_old:
        old_rate = statistics.median(r["notes"] / r["seconds"] for r in results["old"])
        print(f"old: median {old_rate / 1e6:.3f} M notes/s; new/old speed ratio {new_rate / old_rate:.2f}")
        a, b = load_task_dataset(work / "old-0")[0], load_task_dataset(work / "new-0")[0]
        same = set(a) == set(b) and all(
            a[s].data.column(c).combine_chunks().equals(b[s].data.column(c).combine_chunks())
            for s in a for c in ("input_ids", "attention_mask", "piece_id", "segment_id"))
        print(f"same segments in both folders: {'yes' if same else 'NO'}")
        summary.update(old_median_notes_per_second=old_rate, new_over_old=new_rate / old_rate, same_segments=same)
    for runs in results.values():
        for r in runs:
            r["notes_per_second"] = r["notes"] / r["seconds"]
            r["peak_pss_mib"] = r["peak_pss"] / 2**20
    output.write(what="notes of all splits / wall time (parse + tokenise + segment + write); peak memory: summed PSS "
                      "of the process tree, sampled every 20 ms; runs in the order old, new, old, new...",
                 runs=results, **summary)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
