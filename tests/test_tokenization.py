"""Tests of the Octuple tokenizer: vocabulary layout, equality with miditok, segmenting, decoding, I/O, bad files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from miditok import Octuple
from symusic import Note, Score, Tempo, TimeSignature, Track

from adversarial_midibert.constants import (
    ATTRIBUTE_NAMES,
    BAR,
    BOS_ID,
    EOS_ID,
    MASK_ID,
    PAD_ID,
    PITCH,
    POSITION,
    PROGRAM,
    TOKENIZER_FILE_NAME,
    VELOCITY,
)
from adversarial_midibert.tokenization_octuple import (
    MidiReadError,
    OctupleTokenizer,
    default_tokenizer_config,
)


@pytest.fixture(scope="module")
def tokenizer() -> OctupleTokenizer:
    return OctupleTokenizer(warn=False)


@pytest.fixture(scope="module")
def reference() -> Octuple:
    """miditok's own Octuple with the same configuration and a bar limit no test piece reaches."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Octuple(default_tokenizer_config(max_bar_embedding=100_000))


def miditok_ids(reference: Octuple, tokenizer: OctupleTokenizer, score: Score) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = reference.encode(score)
    return np.asarray(seq.ids, dtype=np.int64).reshape(-1, 8)[:, list(tokenizer.attribute_permutation)]


def sorted_rows(ids: np.ndarray) -> np.ndarray:
    return ids[np.lexsort(ids.T[::-1])]


def random_score(seed: int) -> Score:
    """A small score full of edge cases: merged same-program tracks, drums, ties, zero durations, pitches out
    of range, supported/unsupported time signatures at odd ticks, several denominators, tempo duplicates."""
    rng = np.random.default_rng(seed)
    tpq = int(rng.choice([8, 96, 120, 384, 480, 1000]))
    score = Score(tpq)
    length = tpq * 4 * 30
    for _ in range(int(rng.integers(1, 5))):
        track = Track(name="t", program=int(rng.choice([0, 0, 1, 40])), is_drum=bool(rng.random() < 0.2))
        n = int(rng.integers(0, 150))
        grid = int(rng.choice([1, max(tpq // 4, 1), max(tpq // 3, 1), 7]))
        time = np.sort(rng.integers(0, length // grid, n) * grid).astype(np.int32)
        duration = rng.integers(0, tpq * 6, n).astype(np.int32)
        duration[rng.random(n) < 0.05] = 0
        pitch = rng.integers(15, 115, n).astype(np.int8)
        velocity = rng.integers(1, 128, n).astype(np.int8)
        track.notes = Note.from_numpy(time, duration, pitch, velocity)
        track.notes.sort()
        score.tracks.append(track)
    sigs = [TimeSignature(0, 4, 4)] if rng.random() < 0.7 else []
    choices = [(3, 4), (6, 8), (7, 8), (5, 4), (2, 2), (12, 8), (3, 8), (4, 4), (2, 4)]
    for _ in range(int(rng.integers(0, 5))):
        num, den = choices[int(rng.integers(0, len(choices)))]
        sigs.append(TimeSignature(int(rng.integers(0, length)), num, den))
    score.time_signatures = sorted(sigs, key=lambda ts: ts.time)
    tempos = [
        Tempo(int(rng.integers(0, length)) if rng.random() < 0.7 else 0, float(rng.uniform(30, 260)))
        for _ in range(int(rng.integers(0, 6)))
    ]
    score.tempos = sorted(tempos, key=lambda t: t.time)
    return score


def sample_files(data_root: Path, pattern: str, count: int) -> list[Path]:
    files = sorted(data_root.glob(pattern))
    if not files:
        pytest.skip(f"no files match {pattern} under {data_root}")
    step = max(len(files) // count, 1)
    return files[::step][:count]


# ---------------------------------------------------------------------------------------------- vocabulary
def test_vocabulary_layout(tokenizer):
    assert tokenizer.attribute_names == ATTRIBUTE_NAMES
    assert len(tokenizer.vocab_sizes) == 8
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.mask_token_id) == (
        PAD_ID,
        BOS_ID,
        EOS_ID,
        MASK_ID,
    )
    for name, vocab, size in zip(ATTRIBUTE_NAMES, tokenizer.vocab, tokenizer.vocab_sizes, strict=True):
        assert len(vocab) == size, name
        assert [vocab[t] for t in ("PAD_None", "BOS_None", "EOS_None", "MASK_None")] == [0, 1, 2, 3]
    # Our columns are miditok's, permuted.
    miditok_types = tokenizer.miditok_tokenizer.vocab_types_idx
    expected = ["Bar", "Position", "Program", "Pitch", "Duration", "Velocity", "TimeSig", "Tempo"]
    assert list(tokenizer.attribute_permutation) == [miditok_types[t] for t in expected]
    assert tokenizer.vocab_sizes[BAR] == 4 + tokenizer.max_bar_embedding
    lo, hi = tokenizer.pitch_range
    ids = tokenizer.pitch_token_id(np.arange(lo, hi + 1))
    assert np.all(np.diff(ids) == 1)
    assert tokenizer.pitch_token_id(60) == tokenizer.token_to_id("pitch", "Pitch_60")
    with pytest.raises(ValueError, match="pitch range"):
        tokenizer.pitch_token_id(hi + 1)
    assert tokenizer.id_to_token("program", tokenizer.drum_program_token_id) == "Program_-1"
    assert len(tokenizer.velocity_values) == 32 and tokenizer.velocity_values[-1] == 127
    assert tokenizer.id_to_token(BAR, 4 + 1000) == "Bar_1000"  # absolute bars beyond the vocabulary


def test_ids_to_values(tokenizer):
    vel_ids = np.array([tokenizer.token_to_id("velocity", f"Velocity_{v}") for v in tokenizer.velocity_values])
    assert np.array_equal(tokenizer.ids_to_values("velocity", vel_ids), tokenizer.velocity_values)
    assert tokenizer.ids_to_values("pitch", np.array([tokenizer.pitch_token_id(60), PAD_ID])).tolist() == [60, -1]
    ts_id = tokenizer.token_to_id("time_signature", "TimeSig_6/8")
    assert tokenizer.ids_to_values("time_signature", np.array([ts_id])).tolist() == [[6, 8]]
    dur_id = tokenizer.token_to_id("duration", "Duration_1.0.8")
    assert tokenizer.ids_to_values("duration", np.array([dur_id]))[0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("seed", range(0, 60, 3))
def test_matches_miditok_on_edge_cases(tokenizer, reference, seed):
    score = random_score(seed)
    ids, (track_index, note_index) = tokenizer.encode_score(score, return_note_indices=True)
    assert ids.dtype == np.int64 and ids.shape[1] == 8
    assert np.array_equal(ids, miditok_ids(reference, tokenizer, score))
    report = tokenizer.last_report
    assert report.num_notes_in == score.note_num() == report.num_notes_out + report.num_dropped
    # Indices point at the source note (merged tracks included), each note at most once.
    pitches = np.array([score.tracks[t].notes[n].pitch for t, n in zip(track_index, note_index, strict=True)])
    assert np.array_equal(tokenizer.ids_to_values("pitch", ids[:, PITCH]), pitches)
    assert len(set(zip(track_index.tolist(), note_index.tolist(), strict=True))) == len(ids)


def test_matches_miditok_on_real_files(tokenizer, reference, data_root):
    files = (
        sample_files(data_root, "POP909/*/*.mid", 3)
        + sample_files(data_root, "Pianist8/midi/*/*.mid", 3)
        + sample_files(data_root, "EMOPIA/midis/*.mid", 3)
        + sample_files(data_root, "POP1K7/midi_synchronized/*/*.mid", 3)
    )
    for path in files:
        score = Score(str(path))
        ids = tokenizer.encode_score(score)
        assert np.array_equal(ids, miditok_ids(reference, tokenizer, score)), path
        assert np.array_equal(tokenizer.encode_score(path), ids)  # path and Score inputs agree


def test_every_note_is_tokenized_or_reported(tokenizer, data_root):
    files = (
        sample_files(data_root, "POP909/*/*.mid", 4)
        + sample_files(data_root, "Pianist8/midi/*/*.mid", 4)
        + sample_files(data_root, "EMOPIA/midis/*.mid", 4)
    )
    for path in files:
        ids = tokenizer.encode_score(path)
        report = tokenizer.last_report
        assert report.source == str(path)
        assert report.num_notes_in == Score(str(path)).note_num(), path
        assert len(ids) == report.num_notes_out == report.num_notes_in - report.num_dropped, path


def test_note_indices_follow_pop909_tracks(tokenizer, data_root):
    path = sample_files(data_root, "POP909/*/*.mid", 1)[0]
    score = Score(str(path))
    ids, (track_index, note_index) = tokenizer.encode_score(path, return_note_indices=True)
    names = {score.tracks[t].name for t in np.unique(track_index)}
    assert {"MELODY", "BRIDGE", "PIANO"} <= names  # three same-program tracks merged, indices still per track
    source = [score.tracks[t].notes[n] for t, n in zip(track_index, note_index, strict=True)]
    assert np.array_equal(tokenizer.ids_to_values("pitch", ids[:, PITCH]), [n.pitch for n in source])
    velocity = tokenizer.ids_to_values("velocity", ids[:, VELOCITY])
    assert np.abs(velocity - np.array([n.velocity for n in source])).max() <= 2
    assert np.all(np.diff(ids[:, BAR]) >= 0)


def test_unrepresentable_notes_are_reported(tmp_path):
    tokenizer = OctupleTokenizer()
    score = Score(480)
    track = Track(name="piano", program=0)
    track.notes = Note.from_numpy(
        np.array([0, 480, 960, 960], np.int32),
        np.array([480] * 4, np.int32),
        np.array([60, 10, 120, 64], np.int8),
        np.array([80] * 4, np.int8),
    )
    score.tracks.append(track)
    path = tmp_path / "low_and_high.mid"
    score.dump_midi(str(path))
    with pytest.warns(UserWarning, match=r"low_and_high\.mid.*2 of 4 notes.*2 pitch out of range"):
        ids = tokenizer.encode_score(path)
    assert len(ids) == 2
    assert tokenizer.last_report.dropped == {"pitch_out_of_range": 2}
    config = default_tokenizer_config(programs=list(range(128)))  # drums excluded
    no_drums = OctupleTokenizer(tokenizer_config=config)
    drums = Track(name="drums", program=0, is_drum=True)
    drums.notes = Note.from_numpy(*(np.array([0], t) for t in (np.int32, np.int32, np.int8, np.int8)))
    drums.notes[0].pitch, drums.notes[0].velocity, drums.notes[0].duration = 36, 90, 120
    score.tracks.append(drums)
    with pytest.warns(UserWarning, match="program not in vocabulary"):
        no_drums.encode_score(score)
    assert no_drums.last_report.dropped["program_not_in_vocabulary"] == 1
    assert no_drums.drum_program_token_id is None


# ---------------------------------------------------------------------------------------------- segments
def test_segment_keeps_all_notes_with_relative_bars(data_root):
    tokenizer = OctupleTokenizer(max_seq_len=128, warn=False)
    path = sample_files(data_root, "POP909/*/*.mid", 1)[0]
    ids = tokenizer.encode_score(path)
    labels = np.arange(len(ids))
    segments, aligned = tokenizer.segment(ids, note_aligned_arrays={"labels": labels})
    assert len(segments) > 1  # a long piece splits
    notes = []
    for segment, extra in zip(segments, aligned, strict=True):
        assert len(segment) <= 128
        assert (segment[0] == BOS_ID).all() and (segment[-1] == EOS_ID).all()
        body = segment[1:-1]
        assert body[0, BAR] == 4 and body[:, BAR].max() < tokenizer.vocab_sizes[BAR]
        assert extra["labels"][0] == extra["labels"][-1] == -100 and len(extra["labels"]) == len(segment)
        first = ids[extra["labels"][1], BAR]
        restored = body.copy()
        restored[:, BAR] += first - 4
        notes.append(restored)
        assert np.array_equal(ids[extra["labels"][1:-1]], restored)
    assert np.array_equal(np.concatenate(notes), ids)


def test_segment_cuts_at_bar_vocabulary_and_length(tokenizer):
    ids = np.tile(np.array([4, 4, 4, 50, 10, 20, 12, 16]), (1500, 1))
    ids[:, BAR] = 4 + np.repeat(np.arange(0, 3000, 2), 1)  # one note every two bars: spans 3000 bars
    segments = tokenizer.segment(ids)
    assert sum(len(s) - 2 for s in segments) == len(ids)
    for segment in segments:
        bars = segment[1:-1, BAR] - 4
        assert bars[0] == 0 and bars.max() < tokenizer.max_bar_embedding
    dense = np.tile(np.array([4, 4, 4, 50, 10, 20, 12, 16]), (2500, 1))
    lengths = [len(s) for s in tokenizer.segment(dense)]
    assert lengths == [1024, 1024, 2500 - 2 * 1022 + 2]
    plain = tokenizer.segment(dense[:10], add_special_tokens=False)
    assert len(plain) == 1 and np.array_equal(plain[0], dense[:10])
    with pytest.raises(ValueError, match="note_aligned_arrays"):
        tokenizer.segment(dense, note_aligned_arrays=[np.zeros(3)])


def test_call_returns_batch_encoding(data_root):
    import torch
    from transformers import BatchEncoding

    tokenizer = OctupleTokenizer(max_seq_len=256, warn=False)
    files = sample_files(data_root, "EMOPIA/midis/*.mid", 2)
    batch = tokenizer([str(f) for f in files], return_tensors="pt")
    assert isinstance(batch, BatchEncoding)
    n_segments, length, width = batch["input_ids"].shape
    assert width == 8 and length <= 256 and batch["input_ids"].dtype == torch.int64
    assert batch["attention_mask"].shape == (n_segments, length)
    assert set(batch["piece_index"].tolist()) == {0, 1}
    ids = [tokenizer.encode_score(f) for f in files]
    assert int(batch["attention_mask"].sum()) == sum(len(i) for i in ids) + 2 * n_segments
    padded = batch["attention_mask"] == 0
    assert (batch["input_ids"][padded] == PAD_ID).all()
    single = tokenizer(Score(str(files[0])), return_tensors="np", padding="max_length")
    assert single["input_ids"].shape[1:] == (256, 8) and isinstance(single["input_ids"], np.ndarray)
    lists = tokenizer(files[0], padding=False)
    assert isinstance(lists["input_ids"], list) and len(lists["input_ids"][0][0]) == 8


# ---------------------------------------------------------------------------------------------- decoding
def test_decode_round_trip_real_files(tokenizer, data_root, tmp_path):
    files = sample_files(data_root, "POP909/*/*.mid", 2) + sample_files(data_root, "Pianist8/midi/*/*.mid", 2)
    for path in files:
        source_score = Score(str(path))
        ids, (track_index, note_index) = tokenizer.encode_score(path, return_note_indices=True)
        decoded = tokenizer.decode(ids)
        # Re-encoding the decoded score gives the same tokens: nothing lost beyond the vocabulary's grid.
        assert np.array_equal(sorted_rows(tokenizer.encode_score(decoded)), sorted_rows(ids)), path
        if len(decoded.tracks) != 1:
            continue
        # One program: decoded notes are in token order; compare each with its source note.
        notes = decoded.tracks[0].notes.numpy()
        src = [source_score.tracks[t].notes[n] for t, n in zip(track_index, note_index, strict=True)]
        q_dec, q_src = decoded.ticks_per_quarter, source_score.ticks_per_quarter
        assert np.array_equal(notes["pitch"], [n.pitch for n in src])
        assert np.abs(notes["velocity"] - np.array([n.velocity for n in src])).max() <= 2
        onset_error = np.abs(notes["time"] / q_dec - np.array([n.time for n in src]) / q_src)
        assert onset_error.max() <= 1 / 16 + 1e-9, path  # 8 positions per beat, half a step
        src_dur = np.minimum(np.array([n.duration for n in src]) / q_src, 12.0)
        assert np.abs(notes["duration"] / q_dec - src_dur).max() <= 1 / 16 + 1 / 8 + 1e-9, path
    out = tmp_path / "decoded.mid"
    decoded.dump_midi(str(out))
    assert Score(str(out)).note_num() == len(ids)


def test_decode_segment_with_special_rows_and_torch(tokenizer):
    import torch

    score = random_score(1)
    ids = tokenizer.encode_score(score)
    segment = tokenizer.segment(ids)[0]
    padded = np.concatenate([segment, np.zeros((5, 8), np.int64)])
    decoded = tokenizer.decode(torch.from_numpy(padded)[None])
    assert decoded.note_num() == len(segment) - 2
    masked = segment.copy()
    masked[3] = MASK_ID
    assert tokenizer.decode(masked).note_num() == len(segment) - 3
    assert tokenizer.decode(np.zeros((0, 8), np.int64)).note_num() == 0
    with pytest.raises(ValueError, match="shape"):
        tokenizer.decode(np.zeros((4, 7), np.int64))


def test_positions_are_in_vocabulary(tokenizer):
    for seed in range(5):
        ids = tokenizer.encode_score(random_score(seed))
        assert (ids[:, POSITION] < tokenizer.vocab_sizes[POSITION]).all()
        assert (ids[:, [p for p in range(8) if p != BAR]] < np.delete(tokenizer.vocab_sizes, BAR)).all()
        assert (ids >= 4).all() and (ids[:, PROGRAM] < tokenizer.vocab_sizes[PROGRAM]).all()


# ---------------------------------------------------------------------------------------------- saving
def test_save_and_load(tmp_path):
    tokenizer = OctupleTokenizer(max_seq_len=512, warn=False)
    file = tokenizer.save_pretrained(tmp_path / "tok")
    assert file.name == TOKENIZER_FILE_NAME and not (tmp_path / "tok" / "tokenizer.json").exists()
    data = json.loads(file.read_text())
    assert data["format_version"] == 1 and data["max_seq_len"] == 512
    assert data["miditok_config"]["additional_params"]["max_bar_embedding"] == tokenizer.max_bar_embedding
    loaded = OctupleTokenizer.from_pretrained(tmp_path / "tok", warn=False)
    assert loaded.max_seq_len == 512 and loaded.vocab_sizes == tokenizer.vocab_sizes
    assert loaded.config == tokenizer.config and loaded.vocab == tokenizer.vocab
    score = random_score(4)
    assert np.array_equal(loaded.encode_score(score), tokenizer.encode_score(score))
    assert OctupleTokenizer.from_pretrained(file, max_seq_len=64).max_seq_len == 64
    data["format_version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="format version"):
        OctupleTokenizer.from_pretrained(tmp_path / "future.json")
    with pytest.raises(FileNotFoundError, match=TOKENIZER_FILE_NAME):
        OctupleTokenizer.from_pretrained(tmp_path / "nowhere")


def test_rejects_unsupported_config():
    with pytest.raises(ValueError, match="use_tempos"):
        OctupleTokenizer(tokenizer_config=default_tokenizer_config(use_tempos=False))
    with pytest.raises(ValueError, match="max_seq_len"):
        OctupleTokenizer(max_seq_len=2)


# ---------------------------------------------------------------------------------------------- bad files
def test_bad_files_raise_clear_errors(tokenizer, tmp_path):
    rng = np.random.default_rng(0)
    random_bytes = tmp_path / "random.mid"
    random_bytes.write_bytes(rng.bytes(512))
    truncated_header = tmp_path / "truncated_header.mid"
    truncated_header.write_bytes(b"MThd\x00\x00\x00")
    empty = tmp_path / "empty.mid"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.mid"
    good = tmp_path / "good.mid"
    random_score(2).dump_midi(str(good))
    truncated = tmp_path / "truncated.mid"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (random_bytes, truncated_header, empty, missing, truncated):
        with pytest.raises(MidiReadError, match=path.name):
            tokenizer.encode_score(path)
        with pytest.raises(ValueError, match=path.name):  # MidiReadError is a ValueError
            tokenizer([good, path])
    with pytest.raises(TypeError, match="symusic.Score or a MIDI file path"):
        tokenizer.encode_score(123)


def test_unreadable_file_is_a_midi_read_error(tokenizer, tmp_path, monkeypatch):
    """A file that cannot be opened (permission denied) is a MidiReadError naming it, not a bare OSError."""
    locked = tmp_path / "locked.mid"
    locked.write_bytes(b"not midi at all")
    real_open, real_read_bytes = open, Path.read_bytes

    def deny(path):
        if Path(path).name == locked.name:
            raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("builtins.open", lambda file, *a, **k: deny(file) or real_open(file, *a, **k))
    monkeypatch.setattr(Path, "read_bytes", lambda self: deny(self) or real_read_bytes(self))
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: deny(self) or real_open(self, *a, **k))
    with pytest.raises(MidiReadError, match=r"locked\.mid: cannot be read \(Permission denied\)"):
        tokenizer.encode_score(locked)
    folder = tmp_path / "folder.mid"
    folder.mkdir()
    with pytest.raises(MidiReadError, match="folder.mid"):
        tokenizer.encode_score(folder)


def test_warning_names_the_source_of_an_in_memory_score(tmp_path):
    tokenizer = OctupleTokenizer(warn=True)
    score = Score(480)
    track = Track(name="piano", program=0)
    track.notes = Note.from_numpy(*(np.array(v, dtype=np.int32) for v in ([0, 480], [240, 240])),
                                  np.array([60, 5], np.int8), np.array([80, 80], np.int8))  # 5: below the range
    score.tracks.append(track)
    with pytest.warns(UserWarning, match=r"^song\.mid: 1 of 2 notes left out; 1 pitch out of range"):
        tokenizer.encode_score(score, source="song.mid")
    with pytest.warns(UserWarning, match=r"^<Score>: 1 of 2 notes left out"):
        tokenizer.encode_score(score)


def test_decode_whole_piece_from_its_segments(data_root):
    """The bar offsets of a call put every note of a multi-segment piece back in place."""
    tokenizer = OctupleTokenizer(max_seq_len=64, warn=False)
    path = sample_files(data_root, "POP909/*/*.mid", 1)[0]
    other = sample_files(data_root, "EMOPIA/midis/*.mid", 1)[0]
    batch = tokenizer([other, path], return_tensors="np")
    assert batch["bar_offset"].shape == batch["piece_index"].shape
    whole = tokenizer.encode_score(path)
    segments = batch["input_ids"][batch["piece_index"] == 1]
    assert len(segments) > 10 and batch["bar_offset"][batch["piece_index"] == 1].max() > 0
    expected = tokenizer.decode(whole)
    restored = tokenizer.decode(segments, batch["bar_offset"][batch["piece_index"] == 1])
    assert restored.note_num() == expected.note_num() == len(whole)
    for got, want in zip(restored.tracks, expected.tracks, strict=True):
        assert np.array_equal(got.notes.numpy()["time"], want.notes.numpy()["time"])
        assert np.array_equal(got.notes.numpy()["pitch"], want.notes.numpy()["pitch"])
        assert np.array_equal(got.notes.numpy()["duration"], want.notes.numpy()["duration"])
    assert np.array_equal(sorted_rows(tokenizer.encode_score(restored)), sorted_rows(whole))
    pieces = tokenizer.batch_decode(batch)
    assert [p.note_num() for p in pieces] == [len(tokenizer.encode_score(other)), len(whole)]
    with pytest.raises(ValueError, match="bar_offset"):
        tokenizer.decode(segments)  # several segments: their bars are relative, the offsets are needed
    segs, offsets = tokenizer.segment(whole, return_bar_offsets=True)
    assert np.array_equal(offsets, batch["bar_offset"][batch["piece_index"] == 1])


def _fake_hub_cache(cache: Path, repo_id: str, files: dict[str, Path], revision: str = "a" * 40) -> Path:
    """The layout huggingface_hub keeps in HF_HUB_CACHE: models--org--name/{refs/main, snapshots/<rev>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_from_pretrained_resolves_a_hub_id_from_the_offline_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    saved = OctupleTokenizer(max_seq_len=96, warn=False)
    file = saved.save_pretrained(tmp_path / "saved")
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "my-org/octuple", {TOKENIZER_FILE_NAME: file})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = OctupleTokenizer.from_pretrained("my-org/octuple", cache_dir=cache, warn=False)
    assert loaded.max_seq_len == 96 and loaded.vocab_sizes == saved.vocab_sizes
    with pytest.raises(FileNotFoundError, match="my-org/missing"):  # offline, not cached
        OctupleTokenizer.from_pretrained("my-org/missing", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match=f"folder: no {TOKENIZER_FILE_NAME} found"):
        OctupleTokenizer.from_pretrained(tmp_path / "no" / "such" / "folder")


def test_save_pretrained_writes_a_transformers_tokenizer_config(tmp_path):
    tokenizer = OctupleTokenizer(max_seq_len=128, warn=False)
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "OctupleTokenizer" and config["model_max_length"] == 128
    assert config["auto_map"]["AutoTokenizer"][0] == "tokenization_octuple.OctupleTokenizer"
    for name in ("tokenization_octuple.py", "octuple_encoding.py", "constants.py"):
        assert (tmp_path / name).is_file()
    assert not list(tmp_path.glob(".*.tmp"))
    bare = tmp_path / "bare"
    tokenizer.save_pretrained(bare, include_code=False)
    assert sorted(p.name for p in bare.iterdir()) == [TOKENIZER_FILE_NAME]
