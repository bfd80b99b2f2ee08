"""Hub remote code: a saved folder loads with `trust_remote_code=True` where `adversarial_midibert` cannot be imported."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import adversarial_midibert  # noqa: F401  (registers the Auto classes)
from adversarial_midibert import (
    AdvMidiBertForMaskedLM,
    AdvMidiBertForSequenceClassification,
    AdvMidiBertForTokenClassification,
    AdvMidiBertModel,
)
from tiny_models import tiny_config  # noqa: E402


PACKAGE_DIR = Path(adversarial_midibert.__file__).parent
MODEL_FILES = ("configuration_adv_midibert.py", "modeling_adv_midibert.py")
HEADS = {
    "AutoModel": AdvMidiBertModel,
    "AutoModelForMaskedLM": AdvMidiBertForMaskedLM,
    "AutoModelForSequenceClassification": AdvMidiBertForSequenceClassification,
    "AutoModelForTokenClassification": AdvMidiBertForTokenClassification,
}

# Runs in a fresh interpreter (-I: no PYTHONPATH, no cwd on sys.path) with an import blocker on top, so only the
# code files of the saved folders are available.
REMOTE_SCRIPT = r'''
import sys

class BlockPackage:
    def find_spec(self, name, path=None, target=None):
        if name == "adversarial_midibert" or name.startswith("adversarial_midibert."):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, BlockPackage())

import json
import torch
import transformers

root = sys.argv[1]
inputs = torch.load(f"{root}/inputs.pt")
results = {}
for auto_name in json.loads(open(f"{root}/heads.json").read()):
    auto_class = getattr(transformers, auto_name)
    model = auto_class.from_pretrained(f"{root}/{auto_name}", trust_remote_code=True).eval()
    assert model.__class__.__module__.startswith("transformers_modules"), model.__class__.__module__
    with torch.no_grad():
        out = model(inputs["input_ids"], attention_mask=inputs["attention_mask"])
    if auto_name == "AutoModel":
        results[auto_name] = out.last_hidden_state
    elif auto_name == "AutoModelForMaskedLM":
        results[auto_name] = torch.cat([*out.logits, out.masker_scores[..., None]], dim=-1)
    else:
        results[auto_name] = out.logits
    # every Auto class also loads the masked-LM folder (its head freshly initialised where absent)
    other = auto_class.from_pretrained(f"{root}/AutoModelForMaskedLM", trust_remote_code=True)
    results[auto_name + ":from_masked_lm"] = type(other).__name__
    # the remote-code model saves again with the complete auto_map
    model.save_pretrained(f"{root}/resaved_{auto_name}")
torch.save(results, f"{root}/remote_outputs.pt")
'''


def _local_output(name: str, model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
    if name == "AutoModel":
        return out.last_hidden_state
    if name == "AutoModelForMaskedLM":
        return torch.cat([*out.logits, out.masker_scores[..., None]], dim=-1)
    return out.logits


def test_model_files_import_only_torch_and_transformers():
    for file_name in MODEL_FILES:
        tree = ast.parse((PACKAGE_DIR / file_name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level > 0:  # relative: only the sibling model file
                    assert node.module in {m.removesuffix(".py") for m in MODEL_FILES}, (file_name, node.module)
                    continue
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= {"torch", "transformers", "math", "dataclasses", "__future__"}, (file_name, roots)


def test_remote_code_loads_every_auto_class_without_the_package(tmp_path):
    torch.manual_seed(0)
    ids = torch.stack([torch.randint(4, v, (2, 9)) for v in tiny_config().vocab_sizes], dim=-1)
    mask = torch.ones(2, 9, dtype=torch.long)
    ids[1, 6:] = 0
    mask[1, 6:] = 0
    torch.save({"input_ids": ids, "attention_mask": mask}, tmp_path / "inputs.pt")
    (tmp_path / "heads.json").write_text(json.dumps(list(HEADS)))

    expected = {}
    for name, model_class in HEADS.items():
        torch.manual_seed(1)
        model = model_class(tiny_config()).eval()
        model.save_pretrained(tmp_path / name)
        expected[name] = _local_output(name, model, ids, mask)

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS_")) and key != "ADV_MIDIBERT_DATA"
    }
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        TRANSFORMERS_VERBOSITY="error",
    )
    completed = subprocess.run(
        [sys.executable, "-I", "-c", REMOTE_SCRIPT, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]

    remote = torch.load(tmp_path / "remote_outputs.pt")
    for name, model_class in HEADS.items():
        torch.testing.assert_close(remote[name], expected[name], atol=0, rtol=0, msg=name)
        assert remote[name + ":from_masked_lm"] == model_class.__name__
        resaved = tmp_path / f"resaved_{name}"
        auto_map = json.loads((resaved / "config.json").read_text())["auto_map"]
        assert set(auto_map) == {"AutoConfig", *HEADS}
        assert all((resaved / file_name).is_file() for file_name in MODEL_FILES)
