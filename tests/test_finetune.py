"""examples/finetune.py end to end on tiny real data sets (composer: sequence, melody: token), per-piece results."""

from __future__ import annotations

import json

import pytest
import torch

from adversarial_midibert.constants import TOKENIZER_FILE_NAME


@pytest.fixture(scope="module")
def finetune():
    from adversarial_midibert.training import finetune

    return finetune


def _build(task, data_root, folder):
    from adversarial_midibert.data import build_recipe, save

    save(build_recipe(task, data_root=data_root, max_seq_len=64, max_files=6, seed=0), folder)
    return folder


def _check_results(output, task, n_labels):
    results = json.loads((output / "all_results.json").read_text())
    assert results["task"] == task
    for key in ("test_accuracy", "test_f1_macro", "eval_accuracy", "eval_f1_macro"):
        assert 0.0 <= results[key] <= 1.0, key
    for key in ("epoch", "train_runtime", "seed", "command"):
        assert key in results
    assert (output / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (output / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (output / TOKENIZER_FILE_NAME).is_file() and (output / "README.md").is_file()
    assert not (output / "best_model").exists()
    config = json.loads((output / "config.json").read_text())
    assert len(config["id2label"]) == n_labels
    return results, config


@pytest.mark.slow
def test_composer_from_scratch_end_to_end(finetune, data_root, tmp_path):
    dataset = _build("composer", data_root, tmp_path / "composer")
    output = tmp_path / "run"
    finetune.main([
        "--dataset", str(dataset), "--from_scratch", "--preset", "tiny", "--output_dir", str(output),
        "--num_train_epochs", "2", "--max_train_samples", "16", "--max_eval_samples", "40",
        "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--pitch_shift", "--seed", "1", "--cpu",
    ])
    results, config = _check_results(output, "composer", 8)
    segments = results["num_test_segments"]
    assert results["num_test_scored"] == segments and results["pitch_shift"] and results["epochs_run"] == 2
    assert config["architectures"] == ["AdvMidiBertForSequenceClassification"]
    assert results["split_source"] == "splits/pianist8.json"  # the figures name their split, as the card does
    card = (output / "README.md").read_text()  # its facts are in all_results.json too: a rewrite keeps them
    assert "| data split | splits/pianist8.json |" in card and "| learning_rate | 0.001 |" in card
    assert results["hyperparameters"]["learning_rate"] == 1e-3
    # Piece level: the per-piece file agrees with all_results.json and its intervals.
    pieces = json.loads((output / "test_piece_results.json").read_text())
    assert len(pieces) == results["test_num_pieces"] and sum(p["num_segments"] for p in pieces) == segments
    assert results["test_piece_accuracy"] == pytest.approx(sum(p["correct"] for p in pieces) / len(pieces))
    assert sum(p["num_correct_segments"] for p in pieces) == round(results["test_accuracy"] * segments)
    for key in ("test_accuracy", "test_piece_accuracy", "eval_accuracy", "eval_piece_accuracy"):
        low, high = results[f"{key}_ci95"]
        assert 0.0 <= low <= results[key] <= high <= 1.0, key
    assert (output / "eval_piece_results.json").is_file() and results["bootstrap"]["n_resamples"] == 2000
    # The folder is ready for the pipeline, and prediction combines a piece's segments as fine-tuning scored it.
    from transformers import pipeline

    classify = pipeline("midi-classification", model=str(output), device="cpu", trust_remote_code=True)
    compared = 0
    for piece in pieces:
        prediction = classify(str(data_root / "Pianist8" / "midi" / piece["piece_id"]))
        probabilities = {s["label"]: s["score"] for s in prediction["scores"]}
        assert len(probabilities) == 8 and sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        if prediction["num_segments"] == piece["num_segments"]:  # --max_eval_samples can cut a piece's last segments
            compared += 1
            assert prediction["label"] == piece["predicted"]
            for name, probability in piece["probabilities"].items():
                assert probabilities[name] == pytest.approx(probability, abs=1e-4)
    assert compared >= 1
    # Refuses to overwrite a finished run.
    with pytest.raises(FileExistsError, match="all_results.json"):
        finetune.main(["--dataset", str(dataset), "--from_scratch", "--output_dir", str(output)])


@pytest.mark.slow
def test_losses_logged_and_evaluations_counted_by_step(finetune, data_root, tmp_path, monkeypatch):
    """--logging_steps and --eval_steps: the training loss every 2 steps, an evaluation every 3 (across epochs of
    4 steps), early stopping after 2 evaluations without a better accuracy (a learning rate too small to change a
    prediction), the curves drawn by step and titled with the task and the model."""
    from adversarial_midibert.visualization import plot_training_curves

    drawn = {}

    def draw(records, path, x, title):
        drawn.update(records=list(records), x=x, title=title)
        return plot_training_curves(records, path, x=x, title=title)

    monkeypatch.setattr(finetune, "plot_training_curves", draw)
    dataset = _build("composer", data_root, tmp_path / "composer")
    output = tmp_path / "run"
    results = finetune.main([
        "--dataset", str(dataset), "--from_scratch", "--preset", "tiny", "--output_dir", str(output),
        "--num_train_epochs", "5", "--max_train_samples", "16", "--max_eval_samples", "8",
        "--per_device_train_batch_size", "4", "--learning_rate", "1e-12", "--logging_steps", "2", "--eval_steps", "3",
        "--early_stopping_patience", "2", "--bootstrap_resamples", "0", "--seed", "1", "--cpu",
    ])
    assert [row["step"] for row in results["history"]] == [3, 6, 9]  # stopped at the second evaluation no better
    assert [row["epoch"] for row in results["history"]] == [0, 1, 2]
    assert results["best_step"] == 3 and results["epoch"] == 0 and results["train_steps"] == 9
    assert results["epochs_run"] == 3
    assert [row["step"] for row in results["train_log"]] == [2, 4, 6, 8, 9]  # and the step it stopped at
    assert all(row["train_loss"] > 0 for row in results["train_log"])
    assert drawn["x"] == "step" and drawn["title"] == "composer fine-tuning of tiny preset from scratch"
    assert drawn["records"] == results["train_log"] + results["history"]


@pytest.mark.slow
def test_melody_from_pretrained_folder_with_probing(finetune, data_root, tmp_path):
    """Token task, loaded from a masked-LM folder (heads dropped), mask fine-tuning, probing layer 1."""
    from adversarial_midibert.data import load_task_dataset
    from adversarial_midibert.modeling_adv_midibert import AdvMidiBertForMaskedLM

    from tiny_models import tiny_config

    dataset = _build("melody", data_root, tmp_path / "melody")
    _, _, tokenizer = load_task_dataset(dataset)
    pretrained = tmp_path / "pretrained"
    config = tiny_config(vocab_sizes=list(tokenizer.vocab_sizes), attribute_embedding_size=16,
                         max_position_embeddings=64)
    torch.manual_seed(0)
    AdvMidiBertForMaskedLM(config).save_pretrained(pretrained)
    encoder_weight = "adv_midibert.encoder.layer.0.attention.self.query.weight"

    output = tmp_path / "run"
    finetune.main([
        "--dataset", str(dataset), "--model_name_or_path", str(pretrained), "--output_dir", str(output),
        "--num_train_epochs", "1", "--max_train_samples", "8", "--max_eval_samples", "4", "--mask_ratio", "0.3",
        "--freeze_backbone", "--probe_layer", "1", "--cpu",
    ])
    results, saved = _check_results(output, "melody", 3)
    assert results["learning_rate"] == 5e-4  # the default for a narrow model (hidden size 32)
    assert saved["architectures"] == ["AdvMidiBertForTokenClassification"] and saved["num_hidden_layers"] == 1
    assert results["num_test_scored"] > 0 and results["probe_layer"] == 1
    pieces = json.loads((output / "test_piece_results.json").read_text())
    assert sum(p["num_scored_notes"] for p in pieces) == results["num_test_scored"]
    correct = sum(p["num_correct_notes"] for p in pieces)
    assert correct / results["num_test_scored"] == pytest.approx(results["test_accuracy"])
    assert "test_piece_accuracy" not in results and len(results["test_accuracy_ci95"]) == 2
    # Frozen backbone: the encoder weights are the pre-trained ones.
    from safetensors.torch import load_file

    before, after = load_file(str(pretrained / "model.safetensors")), load_file(str(output / "model.safetensors"))
    assert torch.equal(before[encoder_weight], after[encoder_weight])


def test_bad_flags_exit_with_a_message_naming_the_flag(finetune, capsys):
    with pytest.raises(SystemExit):
        finetune.parse_args(["--dataset", "x", "--output_dir", "y"])  # neither --from_scratch nor a model
    with pytest.raises(SystemExit):
        finetune.parse_args(["--dataset", "x", "--output_dir", "y", "--from_scratch", "--probe_layer", "2"])
    # Issue 11 failure 6: negative step counts ran and wrote test accuracy 0.0 and a model card.
    for flags, message in ((["--max_train_steps", "-3"], "--max_train_steps must be >= 1, got -3"),
                           (["--num_train_epochs", "0"], "--num_train_epochs must be >= 1, got 0"),
                           (["--max_eval_samples", "0"], "--max_eval_samples must be >= 1"),
                           (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be >= 1"),
                           (["--early_stopping_patience", "-1"], "--early_stopping_patience must be >= 0"),
                           (["--learning_rate=-1e-3"], "--learning_rate must be > 0")):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            finetune.parse_args(["--dataset", "x", "--output_dir", "y", "--from_scratch", *flags])
        assert message in capsys.readouterr().err

