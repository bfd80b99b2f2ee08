"""Embeddings and similarity search on real files: the feature-extraction pipeline's pooling, `adv-midibert embed`
(a datasets folder, bad files skipped and listed) and `adv-midibert search` (datasets' faiss index, saved and
reused)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from adversarial_midibert.cli import main as cli_main
from adversarial_midibert.pipelines import MIDI_FEATURE_EXTRACTION, MidiFeatureExtractionPipeline, midi_pipeline
from adversarial_midibert.similarity import EMBEDDING_COLUMN, INDEX_FILE_NAME, INFO_FILE_NAME, load_index, search

from tiny_models import TINY_SIZES, tiny_finetuned_folder, tiny_pretrained_folder

PIECES = {"Yiruma": ["Yiruma_Love_Hurts.mid", "Yiruma_Poemusic.mid"],
          "Einaudi": ["Einaudi_Canzone_popolare.mid", "Einaudi_Melodia_Africana.mid"]}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return tiny_pretrained_folder(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def midi_folder(tmp_path_factory, data_root):
    folder = tmp_path_factory.mktemp("midi")
    for composer, names in PIECES.items():
        (folder / composer).mkdir()
        for name in names:
            shutil.copy(data_root / "Pianist8" / "midi" / composer / name, folder / composer / name)
    (folder / "copy").mkdir()  # the same piece under another name: its nearest neighbour
    shutil.copy(folder / "Yiruma" / PIECES["Yiruma"][0], folder / "copy" / "twin.mid")
    (folder / "broken.mid").write_bytes(b"not a midi file")
    return folder


def test_feature_extraction_pools_every_note_once_across_segments(model_folder, midi_folder):
    pipe = midi_pipeline(MIDI_FEATURE_EXTRACTION, str(model_folder), device="cpu")
    assert isinstance(pipe, MidiFeatureExtractionPipeline)
    out = pipe(str(midi_folder / "Yiruma" / PIECES["Yiruma"][0]))
    notes = out["note_embeddings"]
    assert out["num_segments"] > 1 and notes.shape == (out["num_notes"], TINY_SIZES["hidden_size"])
    assert not np.isnan(notes).any()  # every note of this file is represented
    np.testing.assert_allclose(out["embedding"], notes.mean(0), rtol=1e-5, atol=1e-6)
    assert out["segment_embeddings"].shape == (out["num_segments"], TINY_SIZES["hidden_size"])
    # a fine-tuned folder embeds too (its head is not used)
    head = tiny_finetuned_folder(model_folder.parent / "composer", False, ["a", "b"])
    vector = midi_pipeline(MIDI_FEATURE_EXTRACTION, str(head), device="cpu")(str(midi_folder / "copy" / "twin.mid"))
    assert vector["embedding"].shape == (TINY_SIZES["hidden_size"],)


def test_embed_then_search_with_a_saved_index(model_folder, midi_folder, tmp_path, capsys):
    from datasets import load_from_disk

    ds_dir = tmp_path / "embeddings"
    code = cli_main(["embed", str(midi_folder), "--model", str(model_folder), "--output_dir", str(ds_dir)])
    assert code == 1  # one file skipped
    captured = capsys.readouterr()
    assert "broken.mid" in captured.err and "5 pieces embedded, 1 skipped" in captured.out
    info = json.loads((ds_dir / INFO_FILE_NAME).read_text())
    assert info["num_embedded"] == 5 and [e["file"] for e in info["errors"]] == [str(midi_folder / "broken.mid")]
    dataset = load_from_disk(str(ds_dir))
    vectors = np.asarray(dataset[EMBEDDING_COLUMN], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)

    query = midi_folder / "Yiruma" / PIECES["Yiruma"][0]
    code = cli_main(["search", str(query), "--index", str(ds_dir), "--top_k", "3", "--json", str(tmp_path / "r.json")])
    assert code == 0 and "index built and saved" in capsys.readouterr().out
    result = json.loads((tmp_path / "r.json").read_text())
    ranked = [n["file"] for n in result["neighbours"]]
    assert len(ranked) == 3 and set(ranked[:2]) == {str(query), str(midi_folder / "copy" / "twin.mid")}
    assert result["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    # the same order as exact cosine similarity computed here
    cosine = vectors @ vectors[dataset["file"].index(str(query))]
    assert ranked[2] == dataset["file"][int(np.argsort(-cosine)[2])]

    index_file = ds_dir / INDEX_FILE_NAME
    stamp = index_file.stat().st_mtime_ns
    again = search(query, ds_dir, top_k=3)
    assert not again["index_built"] and index_file.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert [n["file"] for n in again["neighbours"]] == ranked

    # a stale index (other rows) is rebuilt
    shutil.copy(index_file, tmp_path / "old.faiss")
    cli_main(["embed", str(midi_folder / "Yiruma"), "--model", str(model_folder), "--output_dir", str(ds_dir)])
    assert not index_file.exists()  # the folder was replaced
    shutil.copy(tmp_path / "old.faiss", index_file)
    dataset, built = load_index(ds_dir)
    assert built and dataset.get_index(EMBEDDING_COLUMN).faiss_index.ntotal == 2


def test_search_errors_name_the_input(model_folder, tmp_path, capsys):
    assert cli_main(["search", str(tmp_path / "missing.mid"), "--index", str(tmp_path)]) == 2
    assert "missing.mid: MIDI file not found" in capsys.readouterr().err
    (tmp_path / "q.mid").write_bytes(b"x")
    assert cli_main(["search", str(tmp_path / "q.mid"), "--index", str(tmp_path / "nope")]) == 2
    assert "not an embeddings folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["search", str(tmp_path / "q.mid"), "--index", str(tmp_path), "--top_k", "0"])
    assert cli_main(["embed", str(tmp_path / "q.mid"), "--model", str(model_folder), "--output_dir",
                     str(tmp_path / "out")]) == 2
    assert "could be embedded" in capsys.readouterr().err and not (tmp_path / "out").exists()
