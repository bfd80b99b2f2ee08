"""``transformers.Trainer`` with our collators and models, out of the box: one step of mask fine-tuning and one of
random-masking pre-training on real MIDI files."""

from __future__ import annotations

import pytest
import torch

from adversarial_midibert import AdvMidiBertConfig, AdvMidiBertForMaskedLM, AdvMidiBertForSequenceClassification
from adversarial_midibert.data import DataCollatorForOctuple, DataCollatorForOctupleMLM
from adversarial_midibert.tokenization_octuple import OctupleTokenizer

from tiny_models import tiny_config


def _rows(data_root, tokenizer):
    """Rows shaped like a split of the dataset builder (with the columns the models do not take)."""
    import datasets

    files = sorted((data_root / "EMOPIA" / "midis").glob("*.mid"))[:4]
    if not files:
        pytest.skip(f"no EMOPIA files under {data_root}")
    batch = tokenizer(files, padding=False)
    rows = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "labels": [int(files[i].name[1]) - 1 for i in batch["piece_index"]],  # Q1..Q4
            "piece_id": [files[i].stem for i in batch["piece_index"]],
            "segment_id": list(range(len(batch["piece_index"])))}
    return datasets.Dataset.from_dict(rows)


def _tiny(tokenizer, **extra) -> AdvMidiBertConfig:
    return tiny_config(vocab_sizes=list(tokenizer.vocab_sizes), num_hidden_layers=1, max_position_embeddings=64,
                       **extra)


def _train_one_step(tmp_path, model, dataset, collator):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=1, per_device_train_batch_size=4,
                             learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True,
                             dataloader_num_workers=0, disable_tqdm=True, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert any("embeddings" in n for n in changed)


def test_trainer_mask_finetuning(tmp_path, data_root):
    tokenizer = OctupleTokenizer(max_seq_len=64, warn=False)
    dataset = _rows(data_root, tokenizer)
    model = AdvMidiBertForSequenceClassification(_tiny(tokenizer, num_labels=4))
    collator = DataCollatorForOctuple(tokenizer=tokenizer, mask_ratio=0.3, pitch_shift=True, seed=0)
    _train_one_step(tmp_path, model, dataset, collator)


def test_trainer_random_masking_pretraining(tmp_path, data_root):
    tokenizer = OctupleTokenizer(max_seq_len=64, warn=False)
    dataset = _rows(data_root, tokenizer).remove_columns("labels")
    model = AdvMidiBertForMaskedLM(_tiny(tokenizer))
    collator = DataCollatorForOctupleMLM(tokenizer=tokenizer, strategy="random", seed=0)
    _train_one_step(tmp_path, model, dataset, collator)
