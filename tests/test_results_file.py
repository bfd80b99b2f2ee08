"""The command a results file records: runnable from the repository root, with no path of this machine."""

import os

from benchmarks.results_file import ROOT, typed_command


def test_typed_command_names_the_module_and_relative_paths(tmp_path):
    script = ROOT / "research" / "masker_gate.py"
    line = typed_command([str(script), "--run_dir", str(tmp_path / "gate"), "--seeds", "0,1", "--output",
                          "results/x.json"])
    relative = os.path.relpath(tmp_path / "gate", ROOT)
    assert line == f"python -m research.masker_gate --run_dir {relative} --seeds 0,1 --output results/x.json"
    assert not relative.startswith("/")
