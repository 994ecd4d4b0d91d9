"""Training checkpoints: `stageN_last` moves from one complete (weights, optimizer) pair to the next,
whatever write a crash interrupts; checkpoints in the older layout still resume."""
import os

import pytest
import torch

from mam2_server.model.build import build_mam2
from mam2_server.model.checkpoint import CheckpointError, save_mam2
from mam2_server.train.distributed import weights_digest
from mam2_server.train.loop import freeze_for_stage
from mam2_server.train.state import (
    copy_checkpoint,
    load_training_checkpoint,
    optim_path,
    resume_state,
    save_training_checkpoint,
)


class Crash(Exception):
    """The process dying at this point (kill -9, power loss): nothing after it runs."""


def _model_and_optimizer():
    model = build_mam2("tiny", device="cpu", seed=0)
    optimizer = torch.optim.AdamW(freeze_for_stage(model, 1), lr=1e-2)
    return model, optimizer


def _advance(optimizer):
    """One optimiser step that moves the weights and the Adam moments (so every step's pair differs)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    optimizer.zero_grad()
    sum((p * p).sum() for p in params[:8]).backward()
    optimizer.step()


def _save_step(model, optimizer, out, step):
    """What `train` does at the end of a run: the step-numbered checkpoint, then `_last`."""
    final = save_training_checkpoint(model, optimizer, out / f"stage1_step_{step:06d}.safetensors", stage=1,
                                     step=step, seed=7)
    return copy_checkpoint(final, out / "stage1_last.safetensors")


def _run_to_step_1(out):
    model, optimizer = _model_and_optimizer()
    _advance(optimizer)
    _save_step(model, optimizer, out, 1)
    digest = weights_digest(model)
    _advance(optimizer)
    return model, optimizer, digest


def _renames_of_a_save(tmp_path, monkeypatch):
    model, optimizer = _model_and_optimizer()
    calls = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(b), real(a, b))[1])
    _save_step(model, optimizer, tmp_path / "count", 1)
    monkeypatch.setattr(os, "replace", real)
    return len(calls)


def test_last_checkpoint_stays_a_pair_when_a_save_crashes_between_writes(tmp_path, monkeypatch):
    renames = _renames_of_a_save(tmp_path, monkeypatch)
    assert renames >= 3  # step optimizer, step weights, _last
    real = os.replace
    for k in range(renames):  # the crash comes just before the k-th rename of the second save
        out = tmp_path / f"crash_{k}"
        model, optimizer, digest_1 = _run_to_step_1(out)
        count = iter(range(renames))

        def crashing_replace(a, b, k=k, count=count):
            if next(count) == k:
                raise Crash(f"before renaming onto {b}")
            return real(a, b)

        monkeypatch.setattr(os, "replace", crashing_replace)
        with pytest.raises(Crash):
            _save_step(model, optimizer, out, 2)
        monkeypatch.setattr(os, "replace", real)
        state = resume_state(out / "stage1_last.safetensors", 1)  # raised "not a pair" when _last was two files
        assert state.step == 1 and weights_digest(state.model) == digest_1, k
        assert state.optimizer["state"], "the step-1 Adam moments come back with the step-1 weights"
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "no temp files left behind"

    # the same save, uninterrupted, moves _last to step 2
    model, optimizer, _ = _run_to_step_1(tmp_path / "whole")
    _save_step(model, optimizer, tmp_path / "whole", 2)
    state = resume_state(tmp_path / "whole" / "stage1_last.safetensors", 1)
    assert state.step == 2 and weights_digest(state.model) == weights_digest(model)
    assert not optim_path(tmp_path / "whole" / "stage1_last.safetensors").exists()  # _last names step 2's file


def test_last_names_its_steps_optimizer_file(tmp_path):
    out = tmp_path / "run"
    model, optimizer, _ = _run_to_step_1(out)
    _save_step(model, optimizer, out, 2)
    (out / "stage1_step_000002.optim.pt").unlink()
    with pytest.raises(CheckpointError, match=r"stage1_step_000002\.optim\.pt \(beside it\) is missing"):
        resume_state(out / "stage1_last.safetensors", 1)
    # weights saved without an optimizer name none, and never pick up a stale .optim.pt
    save_training_checkpoint(model, None, out / "stage1_step_000001.safetensors", stage=1, step=1, seed=7)
    assert load_training_checkpoint(out / "stage1_step_000001.safetensors")[2] is None
    with pytest.raises(CheckpointError, match="saved without an optimizer state"):
        resume_state(out / "stage1_step_000001.safetensors", 1)
    with pytest.raises(ValueError, match="beside"):
        copy_checkpoint(out / "stage1_step_000002.safetensors", tmp_path / "elsewhere.safetensors")


def test_another_runs_optimizer_of_the_same_step_is_not_a_pair(tmp_path, monkeypatch):
    out = tmp_path / "run"
    model, optimizer, _ = _run_to_step_1(out)
    _save_step(model, optimizer, out, 2)
    # a new run in the same folder dies at its own step 2, after its optimizer file, before its weights
    other, other_optimizer = _model_and_optimizer()
    _advance(other_optimizer)
    def dies(*args, **kwargs):
        raise Crash("before the weights")

    monkeypatch.setattr("mam2_server.train.state.save_mam2", dies)
    with pytest.raises(Crash):
        save_training_checkpoint(other, other_optimizer, out / "stage1_step_000002.safetensors", stage=1, step=2,
                                 seed=8)
    with pytest.raises(CheckpointError, match="saved with other weights"):
        resume_state(out / "stage1_last.safetensors", 1)


def test_hostile_optimizer_name_is_refused(tmp_path):
    model, _ = _model_and_optimizer()
    path = save_mam2(model, tmp_path / "w.safetensors",
                     extra_metadata={"train_stage": "1", "train_step": "3", "train_optimizer": "../../etc/x.pt"})
    with pytest.raises(CheckpointError, match="not a file name"):
        load_training_checkpoint(path)


def _save_old_layout(model, optimizer, path, step):
    """A checkpoint as written before `train_optimizer`: <name>.safetensors + <name>.optim.pt."""
    save_mam2(model, path, extra_metadata={"train_stage": "1", "train_step": str(step), "train_seed": "7",
                                           "train_world_size": "1"})
    torch.save({"step": step, "stage": 1, "optimizer": optimizer.state_dict()}, optim_path(path))


def test_older_layout_still_resumes_and_is_replaced_cleanly(tmp_path):
    model, optimizer = _model_and_optimizer()
    _advance(optimizer)
    last = tmp_path / "stage1_last.safetensors"
    _save_old_layout(model, optimizer, last, 4)
    state = resume_state(last, 1)
    assert state.step == 4 and state.seed == 7 and state.optimizer["state"]
    torch.save({"step": 3, "stage": 1, "optimizer": optimizer.state_dict()}, optim_path(last))
    with pytest.raises(CheckpointError, match="not a pair"):  # a torn old-layout pair is still caught
        resume_state(last, 1)

    _advance(optimizer)
    _save_step(model, optimizer, tmp_path, 5)  # a resumed run's new _last replaces the old pair
    assert not optim_path(last).exists()
    assert resume_state(last, 1).step == 5


SMALL = ["--config", "tiny", "--stage", "1", "--data", "synthetic", "--batch", "image_seg=1", "--batch",
         "image_matting=1", "--frames", "video_seg=2", "--frames", "video_matting=2", "--quiet"]


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_from_last_to_the_same_weights(tmp_path, monkeypatch):
    from mam2_server.cli import main
    from mam2_server.train.mix import MixedData

    assert main(["train", "--steps", "2", "--out", str(tmp_path / "straight"), *SMALL]) == 0
    real_batch = MixedData.batch

    def dies_at_step_2(self, step, rank=0):
        if step >= 1:
            raise Crash("killed while building step 2")
        return real_batch(self, step, rank)

    monkeypatch.setattr(MixedData, "batch", dies_at_step_2)
    out = tmp_path / "killed"
    with pytest.raises(Crash):
        main(["train", "--steps", "2", "--save-every", "1", "--out", str(out), *SMALL])
    monkeypatch.setattr(MixedData, "batch", real_batch)
    assert resume_state(out / "stage1_last.safetensors", 1).step == 1  # _last follows every checkpoint
    resume = [a for a in SMALL if a not in ("--config", "tiny")]
    assert main(["train", "--steps", "2", "--out", str(out), "--resume", str(out / "stage1_last.safetensors"),
                 *resume]) == 0
    a = load_training_checkpoint(tmp_path / "straight" / "stage1_last.safetensors")[0]
    b = load_training_checkpoint(out / "stage1_last.safetensors")[0]
    assert weights_digest(a) == weights_digest(b)
