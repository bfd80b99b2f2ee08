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


# ------------------------------------------------------------------------------------------------ nothing lost
def _two_songs(folder, data_root, composer="Yiruma"):
    folder.mkdir(parents=True, exist_ok=True)
    for name in PIECES[composer]:
        shutil.copy(data_root / "Pianist8" / "midi" / composer / name, folder / name)
    return folder


def _tree(folder):
    return sorted((p.relative_to(folder).as_posix(), p.read_bytes()) for p in folder.rglob("*") if p.is_file())


def test_embed_never_replaces_a_folder_it_did_not_write(model_folder, data_root, tmp_path, capsys, lock_holder):
    songs = _two_songs(tmp_path / "work" / "songs", data_root)
    (songs / "README.md").write_text("my notes")
    other = tmp_path / "work" / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    (tmp_path / "link").symlink_to(songs)
    before = {folder: _tree(folder) for folder in (songs, other, model_folder)}
    embed = ["embed", str(songs), "--model", str(model_folder), "--output_dir"]
    for target, said in ((songs, "an input of this run"), (tmp_path / "work", "an input of this run"),
                         (tmp_path / "link", "an input of this run"), (model_folder, "an input of this run"),
                         (other, "refusing to replace it")):
        assert cli_main([*embed, str(target)]) == 2, target
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err
    assert {folder: _tree(folder) for folder in before} == before  # every file kept, byte for byte
    # an earlier embeddings folder is replaced; another run writing it at the same time is refused
    out = tmp_path / "embeddings"
    assert cli_main([*embed, str(out)]) == 0 and cli_main([*embed, str(out)]) == 0
    capsys.readouterr()
    with lock_holder(out):
        assert cli_main([*embed, str(out)]) == 2
    assert f"{out} is being written by another process (lock" in capsys.readouterr().err


def test_a_search_during_a_re_embed_never_leaves_a_stale_index(model_folder, data_root, tmp_path, monkeypatch):
    import datasets

    from adversarial_midibert.similarity import embed_files

    songs = {"Yiruma": _two_songs(tmp_path / "Yiruma", data_root),
             "Einaudi": _two_songs(tmp_path / "Einaudi", data_root, "Einaudi")}
    out = tmp_path / "embeddings"
    embed_files(str(model_folder), [songs["Yiruma"]], out, progress=False)
    # the folder is replaced (same number of rows, other pieces) while a search reads it, then while it indexes it
    for owner, name, now in ((datasets, "load_from_disk", "Einaudi"), (datasets.Dataset, "add_faiss_index", "Yiruma")):
        real = getattr(owner, name)

        def read_then_re_embed(*args, real=real, owner=owner, name=name, now=now, **kwargs):
            monkeypatch.setattr(owner, name, real)
            result = real(*args, **kwargs)
            embed_files(str(model_folder), [songs[now]], out, progress=False)
            return result

        monkeypatch.setattr(owner, name, read_then_re_embed)
        (out / INDEX_FILE_NAME).unlink(missing_ok=True)  # so that this search indexes the rows it read
        search(songs[now] / PIECES[now][0], out, top_k=1)
        for _ in range(2):  # built, then loaded: each query of an indexed file finds that file
            for piece in PIECES[now]:
                top = search(songs[now] / piece, out, top_k=1)["neighbours"][0]
                assert top["file"] == str(songs[now] / piece) and top["score"] == pytest.approx(1.0, abs=1e-5)


def test_search_refuses_a_model_that_did_not_embed_the_folder(model_folder, data_root, tmp_path, capsys):
    import torch
    from transformers import AutoModelForMaskedLM

    songs = _two_songs(tmp_path / "songs", data_root)
    model = tmp_path / "model"
    shutil.copytree(model_folder, model)
    out = tmp_path / "embeddings"
    assert cli_main(["embed", str(songs), "--model", str(model), "--output_dir", str(out)]) == 0
    query = ["search", str(songs / PIECES["Yiruma"][0]), "--index", str(out)]
    assert cli_main(query) == 0
    other = AutoModelForMaskedLM.from_pretrained(model)
    with torch.no_grad():
        other.adv_midibert.embeddings.in_linear.weight.mul_(1.5)
    other.save_pretrained(tmp_path / "other")
    shutil.copy(model / "octuple_tokenizer.json", tmp_path / "other")
    capsys.readouterr()
    assert cli_main([*query, "--model", str(tmp_path / "other")]) == 2  # another model of the same width
    assert "not the model that embedded" in capsys.readouterr().err
    other.save_pretrained(model)  # the model folder re-trained after the embedding
    assert cli_main(query) == 2
    assert "not the model that embedded" in capsys.readouterr().err


def test_search_json_never_overwrites_an_input(model_folder, data_root, tmp_path, capsys):
    songs = _two_songs(tmp_path / "songs", data_root)
    out = tmp_path / "embeddings"
    assert cli_main(["embed", str(songs), "--model", str(model_folder), "--output_dir", str(out)]) == 0
    query = songs / PIECES["Yiruma"][0]
    kept = {p: p.read_bytes() for p in (query, out / "state.json")}
    (tmp_path / "a_file").write_text("x")
    for target in (query, out / "state.json", model_folder / "result.json", tmp_path / "a_file" / "r.json"):
        capsys.readouterr()
        assert cli_main(["search", str(query), "--index", str(out), "--json", str(target)]) == 2, target
        captured = capsys.readouterr()
        assert str(target) in captured.err and "nearest" not in captured.out  # refused before the search ran
    assert {p: p.read_bytes() for p in kept} == kept and not (model_folder / "result.json").exists()
    assert cli_main(["search", str(query), "--index", str(out)]) == 0


def test_embed_keeps_a_file_whose_name_is_not_utf8(model_folder, data_root, tmp_path, capsys):
    import os

    from datasets import load_from_disk

    songs = _two_songs(tmp_path / "songs", data_root)
    odd = os.path.join(os.fsencode(songs), b"caf\xe9.mid")
    shutil.copy(songs / PIECES["Yiruma"][0], odd)
    out = tmp_path / "embeddings"
    assert cli_main(["embed", str(songs), "--model", str(model_folder), "--output_dir", str(out)]) == 0
    files = load_from_disk(str(out))["file"]
    assert len(files) == 3 and str(songs / "caf\\xe9.mid") in files
    info = json.loads((out / INFO_FILE_NAME).read_text())
    assert any("not UTF-8" in w for w in info["warnings"][str(songs / "caf\\xe9.mid")])


def test_search_on_a_damaged_folder_says_so_in_one_line(model_folder, data_root, tmp_path, capsys):
    import faiss
    from datasets import Dataset, Features, List, Value

    songs = _two_songs(tmp_path / "songs", data_root)
    out = tmp_path / "embeddings"
    assert cli_main(["embed", str(songs), "--model", str(model_folder), "--output_dir", str(out)]) == 0
    query = ["search", str(songs / PIECES["Yiruma"][0]), "--index", str(out)]
    info = json.loads((out / INFO_FILE_NAME).read_text())

    def refused(said):
        capsys.readouterr()
        assert cli_main(query) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err

    # an index file from elsewhere, of another width (same number of rows)
    wide = faiss.IndexFlatIP(48)
    wide.add(np.eye(2, 48, dtype=np.float32))
    faiss.write_index(wide, str(out / INDEX_FILE_NAME))
    assert cli_main(query) == 0  # not used: rebuilt from the rows
    # an index file whose header claims far more bytes than it holds
    flat = faiss.IndexFlatIP(32)
    flat.add(np.eye(2, 32, dtype=np.float32))
    data = bytearray(faiss.serialize_index(flat))
    at = bytes(data).index((2 * 32).to_bytes(8, "little"))  # the count of stored floats
    data[at:at + 8] = (1 << 60).to_bytes(8, "little")
    (out / INDEX_FILE_NAME).write_bytes(bytes(data))
    assert cli_main(query) == 0
    for bad in ([info], {k: v for k, v in info.items() if k != "model"}):
        (out / INFO_FILE_NAME).write_text(json.dumps(bad))
        refused(f"{out / INFO_FILE_NAME}")
    empty = tmp_path / "empty"
    features = Features({"file": Value("string"), EMBEDDING_COLUMN: List(Value("float32")),
                         "num_notes": Value("int64"), "num_segments": Value("int64")})
    Dataset.from_dict({"file": [], EMBEDDING_COLUMN: [], "num_notes": [], "num_segments": []},
                      features=features).save_to_disk(str(empty))
    (empty / INFO_FILE_NAME).write_text(json.dumps(info))
    query[3] = str(empty)
    refused("holds no embeddings")
