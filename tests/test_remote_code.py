"""Hub remote code: a saved folder loads with `trust_remote_code=True` where `adversarial_midibert` cannot be imported.
Hub remote code: a saved folder loads with `trust_remote_code=True` where `adversarial_midibert` cannot be imported."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import adversarial_midibert
from adversarial_midibert import (
    AdvMidiBertForMaskedLM,
    AdvMidiBertForSequenceClassification,
    AdvMidiBertForTokenClassification,
    AdvMidiBertModel,
)

from script_env import as_cached_hub_repo
from tiny_models import tiny_config

PACKAGE_DIR = Path(adversarial_midibert.__file__).parent
MODEL_FILES = ("configuration_adv_midibert.py", "modeling_adv_midibert.py")
HEADS = {
    "AutoModel": AdvMidiBertModel,
    "AutoModelForMaskedLM": AdvMidiBertForMaskedLM,
    "AutoModelForSequenceClassification": AdvMidiBertForSequenceClassification,
    "AutoModelForTokenClassification": AdvMidiBertForTokenClassification,
}

# The scripts below run in a fresh interpreter (-I: no PYTHONPATH, no cwd on sys.path) with this import blocker on
# top, so only the code files of the saved folders are available.
BLOCK_PACKAGE = r'''
import sys

class BlockPackage:
    def find_spec(self, name, path=None, target=None):
        if name == "adversarial_midibert" or name.startswith("adversarial_midibert."):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, BlockPackage())
'''

REMOTE_SCRIPT = BLOCK_PACKAGE + r'''
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


def _run_blocked(script: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``script`` in a clean interpreter, offline, with the package blocked and the Hub cache under tmp_path."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS_")) and key != "ADV_MIDIBERT_DATA"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), HF_HUB_CACHE=str(tmp_path / "hub_cache"),
               HF_MODULES_CACHE=str(tmp_path / "hf_modules"), TRANSFORMERS_VERBOSITY="error")
    return subprocess.run([sys.executable, "-I", "-c", script, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


# Loads tokenizer + model through the Auto classes, from a folder and from a Hub id resolved in the offline cache,
# with adversarial_midibert unimportable: the tokenizer's code comes from the folder / snapshot like the model's.
AUTO_TOKENIZER_SCRIPT = BLOCK_PACKAGE + r'''
import torch
from transformers import AutoModelForSequenceClassification, AutoProcessor, AutoTokenizer

midi, root = sys.argv[1], sys.argv[2]
results = {}
for source in sys.argv[3:]:
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=True)
    assert type(tokenizer).__module__.startswith("transformers_modules"), type(tokenizer).__module__
    assert type(AutoProcessor.from_pretrained(source, trust_remote_code=True)).__name__ == "OctupleTokenizer"
    model = AutoModelForSequenceClassification.from_pretrained(source, trust_remote_code=True).eval()
    batch = tokenizer(midi, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    piece = tokenizer.decode(batch["input_ids"], batch["bar_offset"])
    results[source] = {"input_ids": batch["input_ids"], "logits": logits, "notes": piece.note_num(),
                       "max_seq_len": tokenizer.max_seq_len}
torch.save(results, f"{root}/remote_tokenizer_outputs.pt")
'''


def test_auto_tokenizer_and_model_from_a_folder_and_a_cached_hub_id_without_the_package(tmp_path, data_root):
    from adversarial_midibert import OctupleTokenizer

    midi = sorted((data_root / "EMOPIA" / "midis").glob("*.mid"))[0]
    tokenizer = OctupleTokenizer(max_seq_len=40, warn=False)
    model = AdvMidiBertForSequenceClassification(tiny_config(vocab_sizes=list(tokenizer.vocab_sizes))).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    as_cached_hub_repo(folder, tmp_path / "hub_cache", "my-org/adv-midibert-tiny")
    completed = _run_blocked(AUTO_TOKENIZER_SCRIPT, [str(midi), str(tmp_path), str(folder), "my-org/adv-midibert-tiny"],
                             tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]

    batch = tokenizer(midi, return_tensors="pt")
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    remote = torch.load(tmp_path / "remote_tokenizer_outputs.pt")
    assert set(remote) == {str(folder), "my-org/adv-midibert-tiny"}
    for result in remote.values():
        assert result["max_seq_len"] == 40 and result["notes"] == len(tokenizer.encode_score(midi))
        assert torch.equal(result["input_ids"], batch["input_ids"])
        torch.testing.assert_close(result["logits"], expected, atol=0, rtol=0)


def test_tokenizer_code_files_are_a_closed_set():
    """The tokenizer's remote code imports only each other (relatively) and the packages the card names."""
    from adversarial_midibert.tokenization_octuple import tokenizer_code_files

    code_files = [path.name for path in tokenizer_code_files()]
    assert code_files == ["tokenization_octuple.py", "constants.py", "octuple_encoding.py"]
    modules = {name.removesuffix(".py") for name in code_files}
    allowed = {"numpy", "miditok", "symusic", "transformers", "huggingface_hub", "__future__", "json", "logging",
               "os", "shutil", "warnings", "collections", "dataclasses", "pathlib", "typing"}
    for file_name in code_files:
        for node in ast.walk(ast.parse((PACKAGE_DIR / file_name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module in modules, (file_name, node.module)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert {n.split(".")[0] for n in names} <= allowed, (file_name, names)


# The three MIDI pipelines from folders and cached Hub ids with the package blocked: the pipeline class comes from the
# folder (custom_pipelines in config.json), like the model and the tokenizer.
PIPELINE_SCRIPT = BLOCK_PACKAGE + r'''
import torch
from transformers import pipeline

midi, root = sys.argv[1], sys.argv[2]
results = {}
for item in sys.argv[3:]:
    source, task = item.split("=")
    pipes = {"inferred": pipeline(model=source, trust_remote_code=True, device="cpu"),
             "named": pipeline(task, model=source, trust_remote_code=True, device="cpu")}
    for how, pipe in pipes.items():
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
        out = pipe(midi)
        if "midi" in out:  # symusic Scores of the token task: not needed, and not picklable
            out.pop("midi"), out.pop("score")
        results[f"{source}:{how}"] = {"task": pipe.task, "class": type(pipe).__name__, **out}
torch.save(results, f"{root}/remote_pipeline_outputs.pt")
'''


def test_pipelines_run_as_remote_code_from_a_folder_and_a_cached_hub_id_without_the_package(tmp_path, data_root):
    from adversarial_midibert.hub.remote_code import add_pipeline_code, remote_code_files
    from adversarial_midibert.pipelines import midi_pipeline

    from tiny_models import tiny_finetuned_folder, tiny_pretrained_folder

    midi = sorted((data_root / "Pianist8" / "midi" / "Yiruma").glob("*.mid"))[0]
    folders = {
        "midi-classification": tiny_finetuned_folder(tmp_path / "composer", False, ["a", "b", "c"]),
        "midi-token-classification": tiny_finetuned_folder(tmp_path / "melody", True, ["melody", "bridge", "accomp"],
                                                           hidden_attributes=["velocity"]),
        "midi-feature-extraction": tiny_pretrained_folder(tmp_path / "base"),
    }
    expected, items = {}, []
    for task, folder in folders.items():
        assert add_pipeline_code(folder) == task
        config = json.loads((folder / "config.json").read_text())
        assert list(config["custom_pipelines"]) == [task]
        assert {"pipelines.py", "pooling.py"} <= set(remote_code_files(folder))  # published with the folder
        expected[task] = midi_pipeline(task, str(folder), device="cpu")(str(midi))  # the installed classes
        repo_id = f"my-org/{folder.name}"
        as_cached_hub_repo(folder, tmp_path / "hub_cache", repo_id)
        items += [f"{folder}={task}", f"{repo_id}={task}"]

    completed = _run_blocked(PIPELINE_SCRIPT, [str(midi), str(tmp_path), *items], tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]
    remote = torch.load(tmp_path / "remote_pipeline_outputs.pt", weights_only=False)
    assert len(remote) == 12
    for key, out in remote.items():
        task = out["task"]
        local = expected[task]
        assert out["num_notes"] == local["num_notes"] and out["num_segments"] == local["num_segments"] > 1, key
        if task == "midi-classification":
            assert out["label"] == local["label"] and out["score"] == pytest.approx(local["score"], abs=1e-6), key
        elif task == "midi-token-classification":
            assert out["labels"] == local["labels"], key
        else:
            np.testing.assert_allclose(out["embedding"], local["embedding"], atol=1e-6, err_msg=key)
            np.testing.assert_allclose(out["note_embeddings"], local["note_embeddings"], atol=1e-6, err_msg=key)
