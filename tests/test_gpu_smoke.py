"""benchmarks.gpu_smoke, the prepared first GPU run, runs end to end on the CPU (--dry_run) so that it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from script_env import script_env


@pytest.mark.slow
def test_gpu_smoke_dry_run_writes_every_figure(repo_root, tmp_path):
    output = tmp_path / "gpu-smoke.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_smoke", "--dry_run", "--output", str(output)],
                          cwd=repo_root, env=script_env(repo_root), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads(output.read_text())
    assert record["sdpa_kernels"] and all("scaled_dot_product" in name for name in record["sdpa_kernels"])
    assert set(record["steps"]) == {"random eager", "adversarial eager", "random compiled", "adversarial compiled"}
    for name, figures in record["steps"].items():
        assert figures["steps_per_s"] > 0 and figures["tflops"] > 0 and figures["estimate_peak_gib"] > 0, name
    # the eager steps read nothing back on the host; the adversarial ones report the masker's ties
    assert record["steps"]["random eager"]["host_syncs_per_step"] == 0
    assert record["steps"]["adversarial eager"]["host_syncs_per_step"] == 0
    ties = record["steps"]["adversarial compiled"]["masker_ties"]
    assert 0 <= ties["tied_notes"] < ties["notes"] and ties["score_dtype"] == "torch.float32"
    fsdp = record["fsdp"]
    assert len(fsdp["losses"]) == 2 and fsdp["eval_loss"] > 0 and 0 < fsdp["frozen_fraction"] < 1
    assert "FSDP (one device)" in proc.stdout and "compiled/eager" in proc.stdout
