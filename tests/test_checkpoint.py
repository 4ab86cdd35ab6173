"""invtransfer.train.checkpoint: safe loading, what a resume accepts, signals (crash and disk
faults while writing: test_faults.py)."""

import os
import signal

import pytest
import torch

from invtransfer.config import to_dict
from invtransfer.errors import InvTransferError
from invtransfer.train.checkpoint import StopSignals, atomic_save, check_resumable, load_checkpoint
from invtransfer.train.configs import TrainConfig

FREE = ("resume", "name", "data.cache_dir")


def full_state(**config) -> dict:
    cfg = to_dict(TrainConfig(**config))
    return {"format": "invtransfer/classifier", "state": "full", "config": cfg, "dataset": {"fingerprint": "f1"}}


def test_a_checkpoint_round_trips_tensors_and_plain_data(tmp_path):
    state = {"format": "invtransfer/classifier", "model": {"w": torch.arange(6.0).view(2, 3)},
             "running": {"loss": 0.5, "seen": 3}, "best": None, "names": ["a", "b"]}
    path = str(tmp_path / "c.pt")
    atomic_save(state, path)
    got = load_checkpoint(path, "classifier")
    assert torch.equal(got["model"]["w"], state["model"]["w"]) and got["running"] == state["running"]
    assert got["names"] == ["a", "b"] and os.listdir(tmp_path) == ["c.pt"]  # no temporary left


def test_load_checkpoint_names_what_is_wrong(tmp_path):
    with pytest.raises(InvTransferError, match="does not exist"):
        load_checkpoint(str(tmp_path / "none.pt"))
    atomic_save({"format": "invtransfer/generator"}, str(tmp_path / "g.pt"))
    with pytest.raises(InvTransferError, match="is a generator checkpoint; expected a classifier checkpoint"):
        load_checkpoint(str(tmp_path / "g.pt"), "classifier")
    atomic_save({"weights": torch.zeros(2)}, str(tmp_path / "foreign.pt"))
    with pytest.raises(InvTransferError, match="not an invtransfer checkpoint"):
        load_checkpoint(str(tmp_path / "foreign.pt"))


def test_a_resume_accepts_only_the_same_training():
    ck = full_state(seed=1, name="run")
    same = to_dict(TrainConfig(seed=1, name="moved", resume=True))  # where and how it resumes may differ
    check_resumable(ck, "ck.pt", TrainConfig, same, FREE, "runs/run", "f1")
    other = to_dict(TrainConfig(seed=2, model="resnet20", name="run"))
    with pytest.raises(InvTransferError, match=r"config differs from that run's in model, seed\. Use the original"):
        check_resumable(ck, "ck.pt", TrainConfig, other, FREE, "runs/run", "f1")
    with pytest.raises(InvTransferError, match="dataset fingerprint f1 differs from the rebuilt dataset's f2"):
        check_resumable(ck, "ck.pt", TrainConfig, same, FREE, "runs/run", "f2")
    with pytest.raises(InvTransferError, match="holds weights only.*cannot start from it"):
        check_resumable(dict(ck, state="weights"), "ck.pt", TrainConfig, same, FREE, "runs/run", "f1",
                        action="start from")


def test_a_resume_compares_options_added_since_at_their_defaults():
    ck = full_state(name="run")
    del ck["config"]["optim"]["scale_to_epochs"]  # a run from before the option existed
    check_resumable(ck, "ck.pt", TrainConfig, to_dict(TrainConfig(name="run")), FREE, "runs/run", "f1")


def test_stop_signals_turn_sigterm_into_a_flag_and_restore_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        assert not signals.stop
        os.kill(os.getpid(), signal.SIGTERM)  # would end the process without the context
        assert signals.stop and signals.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
