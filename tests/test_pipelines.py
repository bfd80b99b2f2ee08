"""The MIDI pipelines on real files: a class per piece with segment aggregation, a class per note with the
class-track MIDI holding every note, and the bounded piano roll."""

from __future__ import annotations

import numpy as np
import pytest
import symusic
import torch
from transformers import pipeline

from adversarial_midibert import MidiClassificationPipeline, MidiReadError, MidiTokenClassificationPipeline
from adversarial_midibert.pipelines import UNCLASSIFIED_NAME, class_tracks_score
from adversarial_midibert.pooling import aggregate_segment_log_probs
from adversarial_midibert.visualization import plot_piano_roll

from tiny_models import tiny_finetuned_folder

COMPOSERS = ["Bethel", "Clayderman", "Einaudi", "Hancock", "Hillsong", "Hisaishi", "Ryuichi", "Yiruma"]
MELODY_CLASSES = ["melody", "bridge", "accompaniment"]


@pytest.fixture(scope="module")
def composer_pipe(tmp_path_factory):
    folder = tiny_finetuned_folder(tmp_path_factory.mktemp("composer"), False, COMPOSERS)
    return pipeline("midi-classification", model=str(folder), device="cpu")


@pytest.fixture(scope="module")
def melody_pipe(tmp_path_factory):
    folder = tiny_finetuned_folder(tmp_path_factory.mktemp("melody"), True, MELODY_CLASSES,
                                   hidden_attributes=["velocity"])
    return pipeline("midi-token-classification", model=str(folder), device="cpu")


def test_aggregation_weights_segments_by_note_count():
    log_probs = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    equal = aggregate_segment_log_probs(log_probs, torch.tensor([10, 10]))
    expected = torch.sqrt(torch.tensor([0.9 * 0.2, 0.1 * 0.8]))
    assert torch.allclose(equal, expected / expected.sum())
    weighted = aggregate_segment_log_probs(log_probs, torch.tensor([100, 1]))  # a short trailing segment
    assert weighted[0] > 0.85 and weighted.sum().item() == pytest.approx(1.0)


def test_classification_pipeline_on_a_real_piece(composer_pipe, data_root, tmp_path):
    assert isinstance(composer_pipe, MidiClassificationPipeline)
    path = sorted((data_root / "Pianist8" / "midi" / "Yiruma").glob("*.mid"))[0]
    out = composer_pipe(str(path))
    assert out["file"] == str(path) and out["notes_left_out"] == {}
    assert sorted(s["label"] for s in out["scores"]) == sorted(COMPOSERS)  # every class, -1 / None keep them all
    assert sum(s["score"] for s in out["scores"]) == pytest.approx(1.0, abs=1e-5)
    assert out["label"] == out["scores"][0]["label"] and out["score"] == max(s["score"] for s in out["scores"])
    assert out["num_segments"] > 1  # 64-row segments: the piece is cut and aggregated
    assert out["segment_probabilities"].shape == (out["num_segments"], 8)
    score = symusic.Score(str(path))
    assert out["num_notes"] == score.note_num()
    # The aggregation is the note-weighted geometric mean of the segments' probabilities.
    weights = torch.tensor([float(n) for n in _segment_note_counts(composer_pipe, path)])
    expected = aggregate_segment_log_probs(torch.log(torch.from_numpy(out["segment_probabilities"])), weights)
    assert out["score"] == pytest.approx(float(expected.max()), abs=1e-5)
    with pytest.raises(ValueError, match="top_k"):
        composer_pipe(str(path), top_k=0)
    with pytest.raises(MidiReadError, match="not_there.mid"):
        composer_pipe(str(tmp_path / "not_there.mid"))
    with pytest.raises(ValueError, match="segment_batch_size"):
        composer_pipe(str(path), batch_size=4)
    # A short clip for the arguments: top_k, lists, in-memory scores, segment_batch_size.
    clip = sorted((data_root / "EMOPIA" / "midis").glob("*.mid"))[0]
    short = symusic.Score(str(clip))
    both = composer_pipe([str(clip), short], segment_batch_size=1, top_k=3)
    assert [o["file"] for o in both] == [str(clip), "<Score>"] and len(both[0]["scores"]) == 3
    assert [s["score"] for s in both[1]["scores"]] == pytest.approx([s["score"] for s in both[0]["scores"]], abs=1e-6)
    assert len(composer_pipe(short, top_k=-1)["scores"]) == 8


def _segment_note_counts(pipe, path):
    batch = pipe.tokenizer(str(path), return_tensors="np")
    return (batch["attention_mask"].sum(1) - 2).tolist()


def test_token_pipeline_keeps_every_note(melody_pipe, data_root, tmp_path):
    assert isinstance(melody_pipe, MidiTokenClassificationPipeline)
    assert melody_pipe.model.config.hidden_attributes == ["velocity"]
    score = symusic.Score(str(data_root / "POP909" / "001" / "001.mid"))
    # A note below the tokenizer's pitch range cannot be represented: it must still be written, unclassified.
    score.tracks[2].notes.append(symusic.Note(0, 480, 5, 80))
    total = score.note_num()

    out = melody_pipe(score, source="001-with-a-low-note.mid")
    assert out["file"] == "001-with-a-low-note.mid"
    assert out["notes_left_out"] == {"pitch_out_of_range": 1}
    assert out["classes"].shape == (total,) and len(out["labels"]) == total
    assert out["labels"].count(UNCLASSIFIED_NAME) == 1 and sum(out["counts"].values()) == total
    assert out["counts"][UNCLASSIFIED_NAME] == 1
    probs = out["probabilities"][out["classes"] >= 0]
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    track, index = out["note_track"][-1], out["note_index"][-1]  # per-note positions in the score
    assert score.tracks[track].notes[index].pitch == score.tracks[-1].notes[-1].pitch

    midi = out["midi"]
    midi.dump_midi(str(tmp_path / "001.melody.mid"))
    back = symusic.Score(str(tmp_path / "001.melody.mid"))
    assert back.note_num() == total
    names = [t.name for t in back.tracks]
    assert set(names) <= {*MELODY_CLASSES, UNCLASSIFIED_NAME} and UNCLASSIFIED_NAME in names
    for name, t in zip(names, back.tracks):  # each track holds the notes predicted for its class
        assert len(t.notes) == out["counts"].get(name, 0)
    png = plot_piano_roll(midi, tmp_path / "out" / "001.png", title="001")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_class_tracks_score_checks_its_input():
    score = symusic.Score(480)
    track = symusic.Track(name="x", program=0)
    track.notes.append(symusic.Note(0, 480, 60, 80))
    score.tracks.append(track)
    with pytest.raises(ValueError, match="2 classes for a score of 1 notes"):
        class_tracks_score(score, np.array([0, 1]), ["a", "b"])


# What the [train] extra adds: a core install (`pip install .`) has none of them.
TRAIN_EXTRAS = ("datasets", "accelerate", "evaluate", "sklearn", "matplotlib", "tensorboard", "music21", "scipy")


def test_pipeline_runs_without_the_training_extras(tmp_path, data_root, repo_root):
    """The core install (models, tokenizer, pipelines) classifies a MIDI file with none of the [train] packages."""
    import subprocess
    import sys
    import textwrap

    from script_env import script_env

    folder = tiny_finetuned_folder(tmp_path / "model", False, COMPOSERS)
    path = sorted((data_root / "Pianist8" / "midi" / "Yiruma").glob("*.mid"))[0]
    code = textwrap.dedent(f"""
        import sys
        for name in {TRAIN_EXTRAS!r}:
            sys.modules[name] = None  # `import name` fails, as where the package is not installed
        import adversarial_midibert
        from transformers import pipeline
        out = pipeline("midi-classification", model={str(folder)!r}, device="cpu")({str(path)!r})
        assert out["label"] in {COMPOSERS!r}, out
        print("CORE-INSTALL-OK")
    """)
    run = subprocess.run([sys.executable, "-c", code], env=script_env(repo_root), cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "CORE-INSTALL-OK" in run.stdout, run.stderr[-3000:]


def test_token_pipeline_gives_each_note_the_softmax_of_its_own_row(melody_pipe):
    """Issue 19 item 14: the old check compared the last note with itself, so reversing ``source_note`` passed.
    Here each note's probabilities must equal the model's softmax at the row of that note, found independently
    from the tokenizer's note indices (segments run one at a time, velocity hidden by MASK as in fine-tuning)."""
    score = symusic.Score(480)
    for t, (program, base) in enumerate([(0, 60), (33, 40)]):
        track = symusic.Track(name=f"t{t}", program=program)
        for i in range(70):  # two tracks x 70 notes: several 64-row segments
            track.notes.append(symusic.Note(i * 120 + 30 * t, 100 + 7 * (i % 5), base + (i * 7 + t) % 19, 40 + i))
        score.tracks.append(track)
    out = melody_pipe(score)
    tokenizer, model = melody_pipe.tokenizer, melody_pipe.model
    ids, (track_index, note_index) = tokenizer.encode_score(score, return_note_indices=True)
    segments = tokenizer.segment(ids)
    assert len(segments) > 2 and sum(len(s) - 2 for s in segments) == len(ids)
    rows = []
    with torch.no_grad():
        for segment in segments:
            inputs = torch.from_numpy(segment).long()[None]
            inputs[..., 5] = tokenizer.mask_token_id  # velocity, the hidden attribute
            logits = model(input_ids=inputs, attention_mask=torch.ones(inputs.shape[:2], dtype=torch.long)).logits
            rows.append(torch.softmax(logits[0, 1:-1].float(), dim=-1))  # the notes, BOS/EOS rows left out
    expected = torch.cat(rows).numpy()
    offsets = np.concatenate([[0], np.cumsum([t.note_num() for t in score.tracks])])
    positions = offsets[track_index] + note_index
    assert sorted(positions.tolist()) == list(range(score.note_num()))
    np.testing.assert_allclose(out["probabilities"][positions], expected, atol=1e-5)
    assert (out["classes"][positions] == expected.argmax(axis=1)).all()
    assert not np.allclose(expected[0], expected[-1], atol=1e-3)  # the rows differ: a permutation would show


def test_a_piece_with_no_representable_note_is_refused_by_piece_tasks_and_unclassified_by_the_token_task(
        composer_pipe, melody_pipe):
    from adversarial_midibert.pipelines import MIDI_FEATURE_EXTRACTION, midi_pipeline

    score = symusic.Score(480)
    track = symusic.Track(program=0)
    track.notes.append(symusic.Note(0, 480, 2, 80))  # pitch 2: below the tokenizer's pitch range
    score.tracks.append(track)
    with pytest.raises(ValueError, match=r"^low\.mid: no note could be tokenized .*nothing to classify$"):
        composer_pipe(score, source="low.mid")
    embed = midi_pipeline(MIDI_FEATURE_EXTRACTION, composer_pipe.model.name_or_path, device="cpu")
    with pytest.raises(ValueError, match=r"^low\.mid: no note could be tokenized .*nothing to embed$"):
        embed(score, source="low.mid")
    assert melody_pipe(score, source="low.mid")["labels"] == [UNCLASSIFIED_NAME]


def test_a_folder_trained_here_runs_with_the_installed_classes_without_trusting_its_code(tmp_path, data_root):
    """Training outputs carry ``custom_pipelines`` (the remote-code route for machines without the package); where the
    package is installed, ``pipeline(task, model=folder)`` runs the installed classes and asks for no trust."""
    import json

    from transformers import AutoConfig, AutoModelForSequenceClassification

    from adversarial_midibert.hub.remote_code import add_pipeline_code

    folder = tiny_finetuned_folder(tmp_path / "composer", False, ["a", "b"])
    add_pipeline_code(folder)
    pipe = pipeline("midi-classification", model=str(folder), device="cpu")
    assert type(pipe) is MidiClassificationPipeline  # the installed class, not a copy from the folder
    midi = min((data_root / "Pianist8" / "midi" / "Yiruma").glob("*.mid"))
    assert pipe(str(midi))["label"] in ("a", "b")
    # the folder keeps its remote-code route: saving the loaded config or model writes custom_pipelines back
    written = json.loads((folder / "config.json").read_text())["custom_pipelines"]
    AutoConfig.from_pretrained(folder).save_pretrained(tmp_path / "config_copy")
    AutoModelForSequenceClassification.from_pretrained(folder).save_pretrained(tmp_path / "model_copy")
    for copy in ("config_copy", "model_copy"):
        assert json.loads((tmp_path / copy / "config.json").read_text())["custom_pipelines"] == written
    # a folder whose pipeline for the task is another class keeps asking before its code runs
    config = json.loads((folder / "config.json").read_text())
    config["custom_pipelines"]["midi-classification"]["impl"] = "pipelines.SomeOtherPipeline"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("midi-classification", model=str(folder), device="cpu")
