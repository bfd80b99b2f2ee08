"""PackedMaskBook (one bit per position, in memory or on disk) against MaskBook: same rows, same run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_pretraining import make_batch, tiny_model

from adversarial_midibert.mask_book import MaskerScoreCache, PackedMaskBook
from adversarial_midibert.pretraining import (
    AdversarialMLM,
    AttributeWeights,
    UniformSampler,
    freezing_pass,
    step_generator,
)

from byte_mask_book import MaskBook

LENGTHS = torch.tensor([22, 14, 32, 9, 40])


def _books(tmp_path, lengths=LENGTHS, max_len=64):
    return {
        "dense": MaskBook(len(lengths), max_len, segment_lengths=lengths),
        "packed": PackedMaskBook(len(lengths), max_len, segment_lengths=lengths),
        "disk": PackedMaskBook(len(lengths), max_len, directory=tmp_path / "book"),  # notes recorded by the pass
    }


def _all_rows(book, n=5, width=64):
    return book.rows(torch.arange(n), width)


def test_packed_books_follow_the_dense_book_through_freezing_passes_and_steps(tmp_path):
    """Small corpus: two freezing passes and a few steps give the same book, fraction and losses with each book."""
    batches = [make_batch((20, 12), seed=0, segment_ids=[0, 1]), make_batch((30, 7, 38), seed=1, segment_ids=[2, 3, 4])]
    results = {}
    for name, book in _books(tmp_path).items():
        model = tiny_model()
        fractions = [freezing_pass(model, batches, book, UniformSampler(0.1, 0.3), UniformSampler(0.0, 0.1),
                                   generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
        step = AdversarialMLM(model, mask_book=book, attribute_weights=AttributeWeights())
        losses = []
        for i, batch in enumerate(batches):
            torch.manual_seed(i)
            out = step(batch, generator=step_generator(3, i), return_details=True)
            losses.append((float(out.loss.detach()), out.chosen.clone(), float(out.frozen_fraction)))
        results[name] = (fractions, _all_rows(book), book.fingerprint() if name != "dense" else None, losses)
    dense = results["dense"]
    assert dense[0][1] > dense[0][0] > 0 and not dense[1].all()
    for name in ("packed", "disk"):
        fractions, rows, _, losses = results[name]
        assert fractions == pytest.approx(dense[0], abs=1e-12), name
        assert torch.equal(rows, dense[1]), name
        for (loss, chosen, frozen), (d_loss, d_chosen, d_frozen) in zip(losses, dense[3]):
            assert loss == pytest.approx(d_loss, abs=1e-6) and torch.equal(chosen, d_chosen)
            assert frozen == pytest.approx(d_frozen)
    assert results["packed"][2] == results["disk"][2]


def test_rows_set_rows_and_their_edge_cases(tmp_path):
    for book in (PackedMaskBook(4, 10, segment_lengths=[10, 6, 4, 3]),
                 PackedMaskBook(4, 10, segment_lengths=[10, 6, 4, 3], directory=tmp_path / "b")):
        assert book.frozen_fraction() == 0.0 and book.rows(torch.tensor([1, 3]), 12).all()  # padded with ones
        new = torch.ones(2, 10, dtype=torch.bool)
        new[0, 1:5] = False  # first row of segment 0: overwritten by the later duplicate below
        new[1, 2:4] = False
        book.set_rows(torch.tensor([0, 0]), new)
        assert book.rows(torch.tensor([0]), 10)[0].tolist() == [True, True, False, False] + [True] * 6
        assert book.frozen_fraction() == pytest.approx(2 / 15)
        narrow = torch.zeros(1, 3, dtype=torch.bool)  # only the first three columns are overwritten
        book.set_rows(torch.tensor([0]), narrow)
        assert book.rows(torch.tensor([0]), 4)[0].tolist() == [False, False, False, False]
        assert book.frozen_fraction() == pytest.approx(4 / 15)
        with pytest.raises(IndexError, match="segment_id out of range"):
            book.rows(torch.tensor([4]), 10)


def test_state_round_trips_and_size(tmp_path):
    book = PackedMaskBook(1000, 1024)
    assert book.nbytes() == 1000 * 128 + 1000 * 8  # one bit per position, two counts per segment
    rows = torch.rand(3, 1024) > 0.5
    book.set_rows(torch.tensor([5, 500, 999]), rows, notes=torch.tensor([1022, 1022, 1022]))
    other = PackedMaskBook(1000, 1024)
    other.load_state_dict(book.state_dict())
    assert other.fingerprint() == book.fingerprint() and other.frozen_fraction() == book.frozen_fraction()
    with pytest.raises(ValueError, match="another dataset"):
        PackedMaskBook(999, 1024).load_state_dict(book.state_dict())

    disk = PackedMaskBook(1000, 1024, directory=tmp_path / "work")
    assert disk.nbytes() == 0
    disk.set_rows(torch.tensor([5, 500, 999]), rows, notes=torch.tensor([1022, 1022, 1022]))
    assert disk.fingerprint() == book.fingerprint()
    disk.save_files(tmp_path / "checkpoint")
    disk.set_rows(torch.tensor([5]), torch.zeros(1, 1024, dtype=torch.bool))
    assert disk.fingerprint() != book.fingerprint()
    disk.load_files(tmp_path / "checkpoint")
    assert disk.fingerprint() == book.fingerprint() and disk.frozen_fraction() == pytest.approx(book.frozen_fraction())


def test_a_reading_process_sees_the_writer_after_broadcast(tmp_path):
    writer = PackedMaskBook(50, 16, directory=tmp_path / "book", writer=True)
    reader = PackedMaskBook(50, 16, directory=tmp_path / "book", writer=False)
    assert reader.rows(torch.arange(50), 16).all()
    frozen = torch.ones(2, 16, dtype=torch.bool)
    frozen[:, 3] = False
    writer.set_rows(torch.tensor([7, 42]), frozen, notes=torch.tensor([10, 12]))
    reader.set_rows(torch.tensor([7]), torch.zeros(1, 16, dtype=torch.bool))  # not the writer: ignored
    writer.broadcast()
    reader.broadcast()
    got = reader.rows(torch.tensor([7, 42, 8]), 16)
    assert not got[0, 3] and not got[1, 3] and got[2].all() and got[:, :3].all()
    assert reader.frozen_fraction() == pytest.approx(2 / 22)
    # bits on disk: 50 rows of 2 bytes
    assert (tmp_path / "book" / "frozen_bits.bin").stat().st_size == 50 * 2
    assert np.fromfile(tmp_path / "book" / "frozen_bits.bin", dtype=np.uint8).sum() == 2 * 8


def test_score_cache_codes_round_trip_and_never_seen_marker():
    cache = MaskerScoreCache(6, 10)
    assert cache.nbytes() == 60  # one byte per position
    codes = cache.codes(torch.tensor([0, 5]), 12)
    assert codes.dtype == torch.uint8 and codes.shape == (2, 12)
    scores, seen = MaskerScoreCache.decode(codes)
    assert not seen.any() and (scores == 0).all()  # a new cache: never seen, padding columns included
    # quantisation: steps of 1/254, the ends exact, NaN kept as "never seen"
    s = torch.cat([torch.linspace(0, 1, 1001), torch.tensor([0.0, 1.0, 1.7, -0.2, float("nan")])])
    back, seen = MaskerScoreCache.decode(MaskerScoreCache.encode(s))
    assert seen[:-1].all() and not seen[-1]
    assert (back[:1001] - s[:1001]).abs().max() <= 0.5 / 254 + 1e-6
    assert back[1001:1005].tolist() == [0.0, 1.0, 1.0, 0.0]
    # only the written positions change; a segment named twice keeps its last row
    scores = torch.rand(3, 8, generator=torch.Generator().manual_seed(0))
    written = torch.zeros(3, 8, dtype=torch.bool)
    written[:, 1:6] = True
    cache.set_rows(torch.tensor([2, 4, 2]), scores, written)
    rows = MaskerScoreCache.decode(cache.codes(torch.tensor([2, 4, 3]), 10))
    assert rows[1][:2, 1:6].all() and not rows[1][:2, 6:].any() and not rows[1][:2, 0].any() and not rows[1][2].any()
    torch.testing.assert_close(rows[0][:2, 1:6], scores[[2, 1], 1:6], atol=0.5 / 254, rtol=0)
    with pytest.raises(IndexError, match="masker score cache of 6 segments"):
        cache.codes(torch.tensor([6]), 10)
    other = MaskerScoreCache(6, 10)
    other.load_state_dict(cache.state_dict())
    assert torch.equal(other.codes(torch.arange(6), 10), cache.codes(torch.arange(6), 10))
    with pytest.raises(ValueError, match="another dataset"):
        MaskerScoreCache(6, 11).load_state_dict(cache.state_dict())


def _score_cache_worker(rank: int, port: str, out_dir: str) -> None:
    """One of two gloo processes: each writes the scores of its own segments (rank 1 twice as many), then syncs."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    cache = MaskerScoreCache(8, 12)
    ids = torch.tensor([0]) if rank == 0 else torch.tensor([4, 5])
    scores = torch.full((len(ids), 10), 0.2 + 0.5 * rank)
    written = torch.ones(len(ids), 10, dtype=torch.bool)
    written[:, 0] = False
    cache.set_rows(ids, scores, written)
    cache.sync(accelerator)
    cache.sync(accelerator)  # nothing changed since: nothing to gather (an empty gather on every process)
    np.save(os.path.join(out_dir, f"codes{rank}.npy"), cache.codes(torch.arange(8), 12).numpy())
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


def test_two_processes_share_their_scores_after_sync(tmp_path):
    import torch.multiprocessing as mp

    from script_env import free_port

    mp.spawn(_score_cache_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    codes = [np.load(tmp_path / f"codes{rank}.npy") for rank in range(2)]
    assert np.array_equal(codes[0], codes[1])
    scores, seen = MaskerScoreCache.decode(torch.from_numpy(codes[0]))
    assert seen[[0, 4, 5], 1:10].all() and not seen[[0, 4, 5], 0].any() and not seen[[1, 2, 3, 6, 7]].any()
    assert scores[0, 1] == pytest.approx(0.2, abs=1 / 254) and scores[5, 1] == pytest.approx(0.7, abs=1 / 254)
