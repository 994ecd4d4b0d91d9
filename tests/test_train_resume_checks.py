"""Resume guards and run bookkeeping, without training: --init-matter is refused with --resume, the
checkpoint records the settings a resume compares, the logs are trimmed atomically, a failed save
stops every rank, and TrainSample pins for the DataLoader."""
import csv
import json
import os
from pathlib import Path

import pytest
import torch

from mam2_server.cli import main
from mam2_server.model.build import build_mam2
from mam2_server.train.data import TrainSample
from mam2_server.train.distributed import DistContext
from mam2_server.train.log import TrainLog
from mam2_server.train.loop import freeze_for_stage
from mam2_server.train.run import TrainRun, TrainSettings, _checkpoint
from mam2_server.train.state import resume_state, save_training_checkpoint

SYNTH = ["--data", "synthetic", "--quiet"]


def test_resume_refuses_init_matter(tmp_path, capsys):
    for path in ("run.safetensors", "dino.pth"):
        (tmp_path / path).write_bytes(b"x")
    assert main(["train", "--stage", "2", "--steps", "9", "--out", str(tmp_path / "out"), *SYNTH,
                 "--resume", str(tmp_path / "run.safetensors"), "--init-matter", str(tmp_path / "dino.pth")]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "drop --init-matter" in err
    assert not (tmp_path / "out").exists()


def _checkpoint_with(tmp_path, **settings):
    model = build_mam2("tiny", device="cpu", seed=0)
    optimizer = torch.optim.AdamW(freeze_for_stage(model, 1), lr=1e-3)
    return save_training_checkpoint(model, optimizer, tmp_path / "stage1_step_000002.safetensors", stage=1, step=2,
                                    seed=0, settings=settings)


def test_checkpoint_records_settings_and_resume_says_when_they_differ(tmp_path, monkeypatch, capsys):
    path = _checkpoint_with(tmp_path, accum=2, lr=4e-4, warmup=10, schedule="cosine")
    state = resume_state(path, 1)
    assert state.settings == {"accum": "2", "lr": "0.0004", "warmup": "10", "schedule": "cosine"}
    assert state.changed_settings({"accum": 2, "lr": 4e-4, "warmup": 10, "schedule": "cosine"}) == []
    assert state.changed_settings({"accum": 1, "lr": 4e-4, "warmup": 10, "schedule": "constant"}) == [
        "--accum 2 -> 1", "--schedule cosine -> constant"]

    seen = {}

    def no_training(model, data, settings, out, **kw):  # the CLI up to the run itself
        seen.update(settings=settings, start=kw["start_step"])
        return TrainRun(first_step=2, last_step=2)

    monkeypatch.setattr("mam2_server.train.run.train", no_training)
    args = ["train", "--stage", "1", "--steps", "3", "--out", str(tmp_path / "out"), *SYNTH, "--resume", str(path)]
    assert main([*args, "--accum", "2", "--warmup", "10"]) == 0  # stage 1's default lr is the recorded 4e-4
    assert "other settings" not in capsys.readouterr().out and seen["start"] == 2
    assert main([*args, "--accum", "1", "--warmup", "10", "--lr", "1e-4"]) == 0
    out = capsys.readouterr().out
    assert "other settings (--accum 2 -> 1, --lr 0.0004 -> 0.0001)" in out and "data stream" in out
    assert seen["settings"].accum_steps == 1 and seen["settings"].lr == 1e-4  # said, not overridden

    older = _checkpoint_with(tmp_path / "old")  # a checkpoint from before: nothing to compare
    assert resume_state(older, 1).settings == {}


def _csv_steps(path):
    with open(path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def _old_run(out: Path, steps=4):
    out.mkdir(parents=True, exist_ok=True)
    log = TrainLog(out, resume_from_step=0)
    for step in range(1, steps + 1):
        log.row({"step": step, "stage": 1, "loss": 0.5})
        if step % 2 == 0:
            log.event({"event": "checkpoint", "step": step, "path": f"stage1_step_{step:06d}.safetensors"})
    log.close()
    with open(out / "train_events.jsonl", "a") as f:
        f.write('{"event": "checkpoint", "st')  # a line a crash cut short


def test_resumed_log_drops_rows_and_events_after_the_step_atomically(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _old_run(out)
    assert _csv_steps(out / "train_log.csv") == [1, 2, 3, 4]
    log = TrainLog(out, resume_from_step=2)
    log.row({"step": 3, "stage": 1, "loss": 0.25})
    log.close()
    assert _csv_steps(out / "train_log.csv") == [1, 2, 3]
    events = [json.loads(line) for line in (out / "train_events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events] == [2]

    # a crash while the log is rewritten leaves the old one whole (it used to be truncated first)
    _old_run(tmp_path / "crash")
    before = (tmp_path / "crash" / "train_log.csv").read_bytes()

    def killed(src, dst):
        raise KeyboardInterrupt("killed while rewriting the log")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        TrainLog(tmp_path / "crash", resume_from_step=2)
    monkeypatch.undo()
    assert (tmp_path / "crash" / "train_log.csv").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "crash").iterdir()) == ["train_events.jsonl", "train_log.csv"]


class _TwoRanks(DistContext):
    """This process as one of two ranks; `all_gather` answers with the other rank's scripted value."""

    def __init__(self, rank, other_ok=True):
        super().__init__(rank=rank, world_size=2)
        self.other_ok = other_ok

    def all_gather(self, obj):
        other = self.other_ok if isinstance(obj, bool) else obj
        return [obj, other] if self.rank == 0 else [other, obj]

    def barrier(self):
        raise AssertionError("a barrier here waits forever when rank 0's save failed")


def test_a_failed_save_on_rank_0_stops_every_rank(tmp_path, monkeypatch):
    model = build_mam2("tiny", device="cpu", seed=0)
    optimizer = torch.optim.AdamW(freeze_for_stage(model, 1), lr=1e-3)
    s = TrainSettings(stage=1, steps=2, lr=1e-3)
    path = tmp_path / "stage1_step_000002.safetensors"

    # rank 1: rank 0 reports its save failed -> rank 1 raises too instead of waiting
    with pytest.raises(RuntimeError, match="rank 0 failed to write the checkpoint stage1_step_000002"):
        _checkpoint(model, optimizer, path, s, _TwoRanks(1, other_ok=False), TrainRun(last_step=2), None)
    _checkpoint(model, optimizer, path, s, _TwoRanks(1), TrainRun(last_step=2), None)  # rank 0 saved: no error

    # rank 0: its own error is raised after the other ranks have been told
    told = []

    class Rank0(_TwoRanks):
        def all_gather(self, obj):
            told.append(obj)
            return super().all_gather(obj)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("mam2_server.train.run.save_training_checkpoint", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _checkpoint(model, optimizer, path, s, Rank0(0), TrainRun(last_step=2), None)
    assert told[-1] is False


def _sample():
    return TrainSample("IM", torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8), torch.rand(1, 1, 8, 8),
                       torch.zeros(1, 8, 8, dtype=torch.long), torch.tensor([0.0, 0.0, 8.0, 8.0]))


def test_train_sample_pins_in_the_dataloader(monkeypatch):
    from torch.utils.data._utils.pin_memory import pin_memory as loader_pin

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a: pinned.append(t) or t.clone())
    kind, [sample] = loader_pin(("image_matting", [_sample()]))  # what pin_memory=True does to a step's batch
    assert kind == "image_matting" and isinstance(sample, TrainSample) and len(pinned) == 5
    vos = TrainSample("VOS", torch.rand(2, 3, 8, 8), torch.ones(2, 1, 8, 8), None, None, torch.zeros(4))
    assert vos.pin_memory().alpha is None and vos.to("cpu", non_blocking=True).trimap is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_sample_pins_and_copies_asynchronously_on_cuda():
    pinned = _sample().pin_memory()
    assert all(t.is_pinned() for t in (pinned.images, pinned.mask, pinned.alpha, pinned.trimap, pinned.box))
    on_gpu = pinned.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    assert on_gpu.images.is_cuda and torch.equal(on_gpu.images.cpu(), pinned.images)
