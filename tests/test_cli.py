"""``pip install .`` ships the ``adv-midibert`` command, the training and data modules it runs and the card template,
and neither the launchers of ``examples/`` nor ``research/``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from adversarial_midibert.cli import main

COMMAND_CHECK = r"""
import contextlib, io, runpy, sys
from pathlib import Path
import adversarial_midibert, adversarial_midibert.training.finetune as finetune
from adversarial_midibert.cli import COMMANDS, main
from adversarial_midibert.hub.card import TEMPLATE_PATH

target = Path(sys.argv[1]).resolve()
# The installed console script itself, run as the shell runs it.
sys.argv = [str(target / "bin" / "adv-midibert"), "--help"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as stop:
        assert stop.code in (0, None), stop.code
assert all(command in out.getvalue() for command in COMMANDS), out.getvalue()
assert Path(adversarial_midibert.__file__).resolve().is_relative_to(target), adversarial_midibert.__file__
assert Path(finetune.__file__).resolve().is_relative_to(target) and TEMPLATE_PATH.is_file()
assert "## Intended use and limitations" in TEMPLATE_PATH.read_text()
for command in COMMANDS:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([command, "--help"])
        except SystemExit as stop:
            assert stop.code == 0, (command, stop.code)
    assert out.getvalue().startswith(f"usage: adv-midibert {command}"), (command, out.getvalue()[:200])
print("ALL-COMMANDS-OK")
"""


@pytest.mark.slow
def test_pip_install_ships_the_command_and_its_files(repo_root, tmp_path):
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("adversarial_midibert", "examples", "research"):
        shutil.copytree(repo_root / name, source / name, ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copyfile(repo_root / name, source / name)
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, capture_output=True, timeout=600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(target)  # the installed copy, not the checkout
    assert (target / "bin" / "adv-midibert").is_file()
    assert not (target / "examples").exists() and not (target / "research").exists()  # they stay in the checkout
    check = subprocess.run([sys.executable, "-c", COMMAND_CHECK, str(target)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert check.returncode == 0 and "ALL-COMMANDS-OK" in check.stdout, check.stderr[-3000:]


def test_unknown_command_and_usage(capsys):
    assert main([]) == 2 and "usage: adv-midibert COMMAND" in capsys.readouterr().out
    assert main(["train"]) == 2 and "unknown command 'train'" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_a_training_command_refusing_its_input_says_why_in_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    assert main(["finetune", "--dataset", str(missing), "--from_scratch", "--cpu", "--output_dir",
                 str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"adv-midibert finetune: error: {missing}: no such data set folder, and not a Hub data set id"]
