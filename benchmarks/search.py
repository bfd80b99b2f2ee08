#!/usr/bin/env python
"""Similarity search at scale: index build time and query latency of ``adv-midibert search``'s index.

The index is the one :mod:`adversarial_midibert.similarity` builds: ``datasets``' ``add_faiss_index`` on the
``embedding`` column (exact inner product, ``Flat``, unless ``--string_factory`` says otherwise), saved with
``save_faiss_index`` and loaded back with ``load_faiss_index`` on the next query. For each size of ``--sizes`` it
times, in one run: building the index, saving it, loading it back, and ``--num_queries`` single queries through
``get_nearest_examples`` (median and 95th percentile). The vectors are synthetic (random unit vectors, as the
embeddings are unit length; exact search does the same work whatever the values), ``--dim`` wide. Ratios to the
smallest size show how each figure grows.

Example::

    nice -n 10 python -m benchmarks.search --output results/search.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results_file import ResultsFile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="pieces indexed")
    parser.add_argument("--dim", type=int, default=768, help="embedding width (768: the paper's hidden size)")
    parser.add_argument("--num_queries", type=int, default=100, help="single queries timed per size")
    parser.add_argument("--top_k", type=int, default=10)
    parser.add_argument("--string_factory", default=None, help="faiss index factory (default: exact Flat)")
    parser.add_argument("--threads", type=int, default=1, help="faiss threads (default 1: the machine is shared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if min(args.sizes) < args.top_k or args.num_queries < 1:
        parser.error("every size must be >= --top_k and --num_queries >= 1")
    return args


def measure(size: int, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    import faiss
    from datasets import Dataset, Features, List, Value

    from adversarial_midibert.similarity import EMBEDDING_COLUMN, unit_rows

    vectors = unit_rows(rng.standard_normal((size, args.dim), dtype=np.float32))
    features = Features({"file": Value("string"), EMBEDDING_COLUMN: List(Value("float32"))})
    dataset = Dataset.from_dict({"file": [f"piece-{i}.mid" for i in range(size)], EMBEDDING_COLUMN: vectors},
                                features=features)
    start = time.perf_counter()
    dataset.add_faiss_index(EMBEDDING_COLUMN, string_factory=args.string_factory,
                            metric_type=faiss.METRIC_INNER_PRODUCT)
    build_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/embedding.faiss"
        start = time.perf_counter()
        dataset.save_faiss_index(EMBEDDING_COLUMN, path)
        save_s = time.perf_counter() - start
        dataset.drop_index(EMBEDDING_COLUMN)
        start = time.perf_counter()
        dataset.load_faiss_index(EMBEDDING_COLUMN, path)
        load_s = time.perf_counter() - start
    queries = unit_rows(rng.standard_normal((args.num_queries, args.dim), dtype=np.float32))
    latencies, correct = [], 0
    for i, query in enumerate(queries):
        start = time.perf_counter()
        scores, examples = dataset.get_nearest_examples(EMBEDDING_COLUMN, query, k=args.top_k)
        latencies.append(time.perf_counter() - start)
        if i < 10:  # the index answers what exact search answers
            correct += examples["file"][0] == f"piece-{int(np.argmax(vectors @ query))}.mid"
    latencies_ms = np.array(latencies) * 1000
    return {"size": size, "build_s": round(build_s, 4), "save_s": round(save_s, 4), "load_s": round(load_s, 4),
            "query_ms_median": round(float(np.median(latencies_ms)), 3),
            "query_ms_p95": round(float(np.percentile(latencies_ms, 95)), 3),
            "top1_agrees_with_exact_search": f"{correct}/{min(10, args.num_queries)}"}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = ResultsFile(args.output, settings=vars(args))
    import faiss

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    rows = []
    for size in sorted(args.sizes):
        row = measure(size, args, rng)
        rows.append(row)
        print(f"{size:>8} pieces: build {row['build_s']:.3f} s, save {row['save_s']:.3f} s, load {row['load_s']:.3f} s,"
              f" query median {row['query_ms_median']:.2f} ms (p95 {row['query_ms_p95']:.2f} ms), top-1 exact "
              f"{row['top1_agrees_with_exact_search']}")
    base = rows[0]
    ratios = {f"{row['size']}/{base['size']}": {
        "size": row["size"] / base["size"],
        "build": round(row["build_s"] / max(base["build_s"], 1e-9), 2),
        "query_median": round(row["query_ms_median"] / max(base["query_ms_median"], 1e-9), 2)} for row in rows[1:]}
    for name, ratio in ratios.items():
        print(f"{name}: build x{ratio['build']}, query x{ratio['query_median']} for x{ratio['size']:.0f} pieces")
    results.write(index=args.string_factory or "Flat (exact inner product)", vectors="synthetic random unit vectors",
                  rows=rows, ratios=ratios)
    return {"rows": rows, "ratios": ratios}


if __name__ == "__main__":
    main()
