"""Tests of the collators (adversarial_midibert.data.collators): padding, pitch shift, mask fine-tuning, MLM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adversarial_midibert.constants import BOS_ID, EOS_ID, MASK_ID, PAD_ID, PITCH, PROGRAM
from adversarial_midibert.data.collators import DataCollatorForOctuple, DataCollatorForOctupleMLM
from adversarial_midibert.tokenization_octuple import OctupleTokenizer

# The real vocabulary (issue 19 item 17: a fake one hid that drum pitches have ids of their own above the pitches)
TOKENIZER = OctupleTokenizer(max_seq_len=64, warn=False)
VOCAB = list(TOKENIZER.vocab_sizes)
DRUM = TOKENIZER.drum_program_token_id
PITCH_TOKENS = {i: token for token, i in TOKENIZER.vocab[PITCH].items()}
PITCH_IDS = np.array(sorted(i for i, t in PITCH_TOKENS.items() if t.startswith("Pitch_")))
DRUM_PITCH_IDS = np.array(sorted(i for i, t in PITCH_TOKENS.items() if t.startswith("PitchDrum_")))
PROGRAM_IDS = np.array(sorted(i for t, i in TOKENIZER.vocab[PROGRAM].items() if t.startswith("Program_")
                              and i != DRUM))


def make_rows(n=6, seed=0, token_labels=False):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(5, 40))
        ids = np.stack([rng.integers(4, v, size=length) for v in VOCAB], axis=1)
        ids[:, PITCH] = rng.choice(PITCH_IDS, size=length)
        ids[:, PROGRAM] = rng.choice(PROGRAM_IDS, size=length)
        ids[1:3, PROGRAM] = DRUM  # two drum notes per segment, with drum pitches
        ids[1:3, PITCH] = rng.choice(DRUM_PITCH_IDS, size=2)
        ids[0], ids[-1] = BOS_ID, EOS_ID
        if i == 0:
            ids[3:-1, PITCH] = TOKENIZER.pitch_token_id(100)  # high notes: only downward shifts fit
        labels = rng.integers(0, 3, size=length).tolist() if token_labels else int(rng.integers(0, 4))
        if token_labels:
            labels[0] = labels[-1] = -100
        rows.append({"input_ids": ids.tolist(), "attention_mask": [1] * length, "labels": labels,
                     "piece_id": f"p{i}", "segment_id": i})
    return rows


def test_padding_and_labels():
    rows = make_rows(token_labels=True)
    batch = DataCollatorForOctuple(pad_to_multiple_of=8, seed=0, return_segment_id=True)(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["input_ids"].shape[1] >= max(lengths)
    for i, n in enumerate(lengths):
        assert (batch["input_ids"][i, n:] == PAD_ID).all()
        assert batch["attention_mask"][i, :n].all() and not batch["attention_mask"][i, n:].any()
        assert (batch["labels"][i, n:] == -100).all()
        assert batch["labels"][i, :n].tolist() == rows[i]["labels"]
    assert batch["segment_id"].tolist() == list(range(len(rows)))
    seq = DataCollatorForOctuple()(make_rows())
    assert seq["labels"].shape == (6,)
    assert set(seq) == {"input_ids", "attention_mask", "labels"}  # only what the models' forward takes


def test_pitch_shift_stays_in_vocab_and_spares_drums_and_specials():
    rows = make_rows(n=16)
    plain = DataCollatorForOctuple()(rows)
    collator = DataCollatorForOctuple(tokenizer=TOKENIZER, pitch_shift=True, seed=3)
    shifts = set()
    for _ in range(5):
        batch = collator(rows)
        ids, ref = batch["input_ids"], plain["input_ids"]
        delta = ids[..., PITCH] - ref[..., PITCH]
        note = plain["attention_mask"].bool() & (ref[..., PITCH] >= 4)
        drum = ref[..., PROGRAM] == DRUM
        assert (delta[~note | drum] == 0).all()  # specials, padding and drums untouched
        assert (ids[..., [a for a in range(8) if a != PITCH]] == ref[..., [a for a in range(8) if a != PITCH]]).all()
        pitched = note & ~drum
        per_row = [set(delta[b][pitched[b]].tolist()) for b in range(len(rows))]
        assert all(len(s) <= 1 for s in per_row)  # one shift per segment
        assert all(-11 <= k <= 11 for s in per_row for k in s)
        low, high = TOKENIZER.pitch_range
        assert per_row[0] <= set(range(-11, high - 100 + 1))  # row 0: pitch 100 can go up to the highest pitch
        for b in range(len(rows)):  # each shifted note is the token of its pitch + k, by the token strings
            (k,) = per_row[b] or {0}
            for before, after in zip(ref[b, :, PITCH][pitched[b]].tolist(), ids[b, :, PITCH][pitched[b]].tolist()):
                pitch = int(PITCH_TOKENS[before].removeprefix("Pitch_"))
                assert PITCH_TOKENS[after] == f"Pitch_{pitch + k}" and low <= pitch + k <= high
        assert all(PITCH_TOKENS[i].startswith("PitchDrum_") for i in ids[..., PITCH][note & drum].tolist())
        shifts |= {k for s in per_row for k in s}
    assert len(shifts) > 5


def test_mask_finetuning_excludes_masked_positions_from_token_labels():
    rows = make_rows(token_labels=True)
    batch = DataCollatorForOctuple(mask_ratio=0.3, seed=0, return_masked_positions=True)(rows)
    masked = batch["masked_positions"]
    assert set(DataCollatorForOctuple(mask_ratio=0.3, seed=0)(rows)) == {"input_ids", "attention_mask", "labels"}
    assert masked.any()
    assert (batch["input_ids"][masked] == MASK_ID).all()
    assert (batch["labels"][masked] == -100).all()
    assert not (masked & ~batch["attention_mask"].bool()).any()
    assert not masked[:, 0].any()  # never BOS


def test_collator_determinism_with_seed():
    rows = make_rows(token_labels=True)

    def make():
        return DataCollatorForOctuple(tokenizer=TOKENIZER, pitch_shift=True, mask_ratio=0.2, seed=11)

    a, b = make()(rows), make()(rows)
    assert all(torch.equal(a[k], b[k]) for k in a)
    m1, m2 = DataCollatorForOctupleMLM(vocab_sizes=VOCAB, seed=5), DataCollatorForOctupleMLM(vocab_sizes=VOCAB, seed=5)
    a, b = m1(rows), m2(rows)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_batch_randomness_depends_on_seed_epoch_and_segments_only():
    """A batch gets the same augmentation whatever was collated before it (DataLoader workers, a resumed run)."""
    rows = make_rows(token_labels=True)

    def make():
        return DataCollatorForOctuple(tokenizer=TOKENIZER, pitch_shift=True, mask_ratio=0.3, seed=11)

    warm, fresh = make(), make()
    warm(rows[3:])
    warm(rows[:2])  # other batches before it
    a, b = warm(rows[:3]), fresh(rows[:3])
    assert all(torch.equal(a[k], b[k]) for k in a)
    fresh.set_epoch(1)
    c = fresh(rows[:3])
    assert not torch.equal(a["input_ids"], c["input_ids"])  # another epoch: other masks and shifts
    unseeded = [{k: v for k, v in r.items() if k != "segment_id"} for r in rows[:3]]
    plain = make()
    assert not torch.equal(plain(unseeded)["input_ids"], plain(unseeded)["input_ids"])  # no ids: one running stream


@pytest.mark.parametrize("strategy", ["random", "bar"])
def test_mlm_collator(strategy):
    rows = make_rows(n=8)
    plain = DataCollatorForOctuple()(rows)
    batch = DataCollatorForOctupleMLM(vocab_sizes=VOCAB, strategy=strategy, seed=0, return_corrupted=True)(rows)
    assert batch["labels"].shape == batch["input_ids"].shape
    assert batch["corrupted"].shape == batch["attention_mask"].shape
    assert set(DataCollatorForOctupleMLM(vocab_sizes=VOCAB, seed=0)(rows)) == {"input_ids", "attention_mask", "labels"}
    real = plain["attention_mask"].bool()
    special = ~real | (plain["input_ids"][..., 0] <= EOS_ID)
    assert torch.equal(batch["input_ids"][special], plain["input_ids"][special])  # PAD/BOS/EOS untouched
    assert (batch["labels"][special] == -100).all()
    chosen = batch["labels"] != -100
    assert chosen.any() and torch.equal(batch["labels"][chosen], plain["input_ids"][chosen])


def test_collator_errors_name_the_flag_and_the_bad_row():
    with pytest.raises(ValueError, match="pitch_shift"):
        DataCollatorForOctuple(pitch_shift=True)
    with pytest.raises(ValueError, match="row 0"):
        DataCollatorForOctuple()([{"input_ids": [[1, 2, 3]]}])
