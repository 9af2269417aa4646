"""Checkpoints: a save cut short is never resumed from, a finished run trains nothing more."""

from __future__ import annotations

import json
import logging
import os

import pytest
from conftest import datamix_args, make_domain_set, tiny_llama

from hf_datamix import DataMixTrainer, MixingController
from hf_datamix.checkpoints import last_checkpoint, read_state, resolve_resume


def train(path, tokenizer, resume=None, **overrides):
    args = datamix_args(path, **{"max_steps": 4, "save_steps": 2, **overrides})
    trainer = DataMixTrainer(
        model=tiny_llama(len(tokenizer)),
        args=args,
        domains=make_domain_set(),
        strategy="uniform",
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_a_checkpoint_cut_short_is_skipped_for_the_one_before(tmp_path, tokenizer, caplog):
    train(tmp_path, tokenizer)
    os.makedirs(tmp_path / "checkpoint-6")  # a kill right after the folder appeared
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text('{"global_step": 8}')
    (tmp_path / "checkpoint-8" / "datamix_state.json").write_text('{"stage": 0, "consum')  # truncated
    with caplog.at_level(logging.WARNING, logger="hf_datamix"):
        assert last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")
        assert resolve_resume(str(tmp_path), "true") == str(tmp_path / "checkpoint-4")
    assert "checkpoint-8: its datamix_state.json is truncated or corrupt" in caplog.text
    assert "checkpoint-6: it has no trainer_state.json" in caplog.text
    with pytest.raises(
        ValueError, match=r"checkpoint-8'.*truncated or corrupt.*complete checkpoints next to it: \[.*checkpoint-2"
    ):
        resolve_resume(str(tmp_path), str(tmp_path / "checkpoint-8"))
    with pytest.raises(ValueError, match=r"checkpoint-99'.*it does not exist"):
        resolve_resume(str(tmp_path), str(tmp_path / "checkpoint-99"))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_state(str(tmp_path / "checkpoint-8"))
    with pytest.raises(ValueError, match=r"holds no complete checkpoint.*leave --resume_from_checkpoint out"):
        resolve_resume(str(tmp_path / "nothing"), True)
    assert resolve_resume(str(tmp_path), "false") is None


def test_older_checkpoints_are_rotated_only_once_the_new_one_is_complete(tmp_path, tokenizer, monkeypatch):
    train(tmp_path / "ok", tokenizer, save_total_limit=1)
    assert sorted(os.listdir(tmp_path / "ok")).count("checkpoint-4") == 1
    assert not os.path.exists(tmp_path / "ok" / "checkpoint-2")

    def crash(self, checkpoint, consumed):
        if checkpoint.endswith("checkpoint-4"):
            raise KeyboardInterrupt("killed while saving")
        return original(self, checkpoint, consumed)

    original = MixingController.write_state
    monkeypatch.setattr(MixingController, "write_state", crash)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed", tokenizer, save_total_limit=1)
    assert last_checkpoint(str(tmp_path / "killed")) == str(tmp_path / "killed" / "checkpoint-2")


def test_resuming_a_finished_run_trains_no_step_more(tmp_path, tokenizer):
    done = train(tmp_path, tokenizer)
    tokens = done.ledger.tokens_by_kind["train"]
    again = train(tmp_path, tokenizer, resume="true")
    assert again.state.global_step == 4 and not os.path.exists(tmp_path / "checkpoint-5")
    assert again.ledger.tokens_by_kind["train"] == tokens
    assert json.load(open(tmp_path / "compute.json"))["tokens_by_kind"]["train"] == tokens
    for name, param in again.model.state_dict().items():  # the checkpoint's weights were loaded
        assert (param == done.model.state_dict()[name]).all(), name
