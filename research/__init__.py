"""Studies of the method, run from the repository root as modules (``python -m research.run_study ...``): the ablation
(``run_ablation``), the method study (``run_study``), linear probes (``probing``), representation health, and the
embedding studies (``embedding_neighbours``, ``matching``, ``model_arms``, ``embedding_report``). Not part of the
wheel; the figures they write live in ``results/`` and ``docs/``."""
