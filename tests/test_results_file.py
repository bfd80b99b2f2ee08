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


def test_a_results_file_records_what_sets_the_cpu_speed(tmp_path):
    """The CPU's model, vector capability and oneDNN bf16 support: a bf16/fp32 ratio means nothing without them."""
    import json

    import torch

    from benchmarks.results_file import ResultsFile

    ResultsFile(tmp_path / "r.json", settings={}).write(ratio=1.0)
    cpu = json.loads((tmp_path / "r.json").read_text())["cpu"]
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["mkldnn_bf16_supported"] is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert isinstance(cpu["model"], str)
