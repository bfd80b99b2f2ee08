"""Speed and memory benchmarks, run from the repository root as modules (``python -m benchmarks.pretrain_step ...``).
Not part of the wheel; the figures they write live in ``results/`` and ``docs/benchmarks.md``."""
