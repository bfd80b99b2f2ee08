"""Predictor: segment aggregation, composer probabilities on a real Pianist8 piece, melody MIDI with every note."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adversarial_midibert.inference import (
    UNCLASSIFIED_NAME,
    AdvMidiBertPredictor,
    aggregate_segment_log_probs,
    plot_piano_roll,
    write_class_tracks_midi,
)

COMPOSERS = ["Bethel", "Clayderman", "Einaudi", "Hancock", "Hillsong", "Hisaishi", "Ryuichi", "Yiruma"]
MELODY_CLASSES = ["melody", "bridge", "accompaniment"]


def _tiny_folder(tmp_path, token: bool, label_names, **config_extra):
    """A randomly initialised tiny fine-tuned folder (config + weights + tokenizer), as finetune.py writes it."""
    from adversarial_midibert.configuration_adv_midibert import AdvMidiBertConfig
    from adversarial_midibert.modeling_adv_midibert import (
        AdvMidiBertForSequenceClassification,
        AdvMidiBertForTokenClassification,
    )
    from adversarial_midibert.tokenization_octuple import OctupleTokenizer

    tokenizer = OctupleTokenizer(max_seq_len=64)
    config = AdvMidiBertConfig(
        vocab_sizes=list(tokenizer.vocab_sizes), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, attribute_embedding_size=16, max_position_embeddings=64,
        num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)}, **config_extra,
    )
    torch.manual_seed(0)
    model_class = AdvMidiBertForTokenClassification if token else AdvMidiBertForSequenceClassification
    folder = tmp_path / ("token" if token else "sequence")
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_aggregation_weights_segments_by_note_count():
    log_probs = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    # Equal weights: geometric mean of the two, renormalised.
    equal = aggregate_segment_log_probs(log_probs, torch.tensor([10, 10]))
    expected = torch.sqrt(torch.tensor([0.9 * 0.2, 0.1 * 0.8]))
    assert torch.allclose(equal, expected / expected.sum())
    # A short trailing segment barely moves the result.
    weighted = aggregate_segment_log_probs(log_probs, torch.tensor([100, 1]))
    assert weighted[0] > 0.85 and weighted.sum().item() == pytest.approx(1.0)


def test_composer_prediction_on_real_piece(tmp_path, data_root):
    predictor = AdvMidiBertPredictor.from_pretrained(_tiny_folder(tmp_path, False, COMPOSERS), device="cpu")
    path = sorted((data_root / "Pianist8" / "midi" / "Yiruma").glob("*.mid"))[0]
    prediction = predictor.predict(path)
    assert list(prediction.probabilities) == COMPOSERS
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
    assert prediction.num_segments > 1  # 64-row segments: the piece is cut and aggregated
    assert prediction.segment_probabilities.shape == (prediction.num_segments, 8)
    with pytest.raises(ValueError, match="not_there.mid"):
        predictor.predict(tmp_path / "not_there.mid")


def test_melody_midi_keeps_every_note(tmp_path, data_root):
    import symusic

    folder = _tiny_folder(tmp_path, True, MELODY_CLASSES, hidden_attributes=["velocity"])
    predictor = AdvMidiBertPredictor.from_pretrained(folder, device="cpu")
    assert predictor.hidden_attributes == [5]
    score = symusic.Score(str(data_root / "POP909" / "001" / "001.mid"))
    # A note below the tokenizer's pitch range cannot be represented: it must still be written, unclassified.
    score.tracks[2].notes.append(symusic.Note(0, 480, 5, 80))
    total = score.note_num()

    prediction = predictor.predict_tokens(score)
    assert prediction.classes.shape == (total,)
    assert prediction.num_unclassified == 1
    assert sum(prediction.counts.values()) == total
    probs = prediction.probabilities[prediction.classes >= 0]
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    midi = write_class_tracks_midi(prediction, tmp_path / "out" / "001.melody.mid")
    back = symusic.Score(str(midi))
    assert back.note_num() == total
    names = [track.name for track in back.tracks]
    assert set(names) <= set(MELODY_CLASSES + [UNCLASSIFIED_NAME]) and UNCLASSIFIED_NAME in names
    for name, track in zip(names, back.tracks):  # each track holds the notes predicted for its class
        assert len(track.notes) == prediction.counts.get(name, 0)
    assert {t.name: len(t.notes) for t in back.tracks}[UNCLASSIFIED_NAME] == 1
    png = plot_piano_roll(prediction, tmp_path / "out" / "001.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
