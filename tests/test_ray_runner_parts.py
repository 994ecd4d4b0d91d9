"""The parts of `mam2 batch --ray` that need no cluster: devices and GPUs per task, retries that
write each frame once, the progress watch and the temp-file sweep (the cluster run itself is
tests/test_ray_batch.py)."""
import json
import os

import pytest

from mam2_server import batch
from mam2_server.batch.ray_runner import _plan, _sweep_temp_files, _Unit, gpus_for, task_device
from mam2_server.batch.runner import file_stamp, run_shot
from mam2_server.cli import main
from mam2_server.engines import EngineConfig
from mam2_server.io.sequence import SequencePattern


def test_task_device_and_declared_gpus():
    assert task_device("cuda:3", [0]) == "cuda"  # Ray shows the task its one GPU as cuda:0
    assert task_device("cuda:3", []) == "cuda:3" and task_device(None, [1]) is None
    assert task_device("cpu", [0]) == "cpu"
    shot = batch.Shot(name="a", input="", output="", engine=EngineConfig("mam2"))
    assert gpus_for(shot, None, cluster_gpus=4) == 1 and gpus_for(shot, None, cluster_gpus=0) == 0
    assert gpus_for(shot, 0.5, cluster_gpus=0) == 0.5  # asked for: as asked (check_fits refuses what cannot run)
    pinned = batch.Shot(name="b", input="", output="", engine=EngineConfig("mam2", device="cpu"))
    classic = batch.Shot(name="c", input="", output="", engine=EngineConfig("classic"))
    assert gpus_for(pinned, None, cluster_gpus=4) == 0 and gpus_for(classic, None, cluster_gpus=4) == 0
    hybrid = batch.Shot(name="d", input="", output="", engine=EngineConfig("hybrid", checkpoint="/no/such.pt"))
    assert gpus_for(hybrid, None, cluster_gpus=2) == 1  # Engine.needs_gpu, read without building the engine


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    assert main(["synth", str(out), "--kinds", "solid", "--frames", "4", "--size", "96x64", "--seeds", "0"]) == 0
    return out / "solid_0"


def test_a_retried_no_resume_chunk_writes_only_what_the_dead_attempt_did_not(clip, tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"defaults": {"engine": "baseline"}, "shots": [
        {"name": "s", "input": str(clip / "plate" / "plate.####.exr"), "output": "a/s.####.exr",
         "prompts": str(clip / "prompts.json")}]}))
    [shot] = batch.load_manifest(manifest).shots
    assert run_shot(shot, {}).status == "done"  # an earlier run's files
    pattern = SequencePattern(shot.output)
    before = {str(pattern.path(f)): file_stamp(pattern.path(f)) for f in range(1001, 1005)}

    # the first attempt of a --no-resume chunk replaced 1001 and 1002, then its worker died
    first = run_shot(shot, {}, resume=False, part=[1001, 1002], before=before)
    assert first.written == [1001, 1002]
    replaced = {f: file_stamp(pattern.path(f)) for f in (1001, 1002)}
    retry = run_shot(shot, {}, resume=False, part=[1001, 1002, 1003, 1004], before=before)
    assert retry.written == [1003, 1004] and retry.kept == 2
    assert {f: file_stamp(pattern.path(f)) for f in (1001, 1002)} == replaced

    # the driver's progress watch counts frames as they are replaced, in the order they are written
    unit = _Unit(frames=[1001, 1002, 1003, 1004], paths=[str(pattern.path(f)) for f in range(1001, 1005)],
                 before=before)
    assert unit.poll() == 4 and unit.poll() == 0
    stale = _Unit(frames=[1001], paths=[str(pattern.path(1001))], before={str(pattern.path(1001)):
                                                                                  file_stamp(pattern.path(1001))})
    assert stale.poll() == 0


def test_with_resume_a_truncated_alpha_counts_only_once_rewritten(clip, tmp_path):
    """Resume rewrites a frame whose alpha does not read; the driver's progress watch must not count
    that file as written when the task starts, only once the task has replaced it."""
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"defaults": {"engine": "baseline"}, "shots": [
        {"name": "s", "input": str(clip / "plate" / "plate.####.exr"), "output": "a/s.####.exr",
         "prompts": str(clip / "prompts.json")}]}))
    [shot] = batch.load_manifest(manifest).shots
    assert run_shot(shot, {}).status == "done"
    pattern = SequencePattern(shot.output)
    truncated = pattern.path(1003)
    truncated.write_bytes(truncated.read_bytes()[:100])  # a crash mid-write of an earlier, non-atomic tool
    [plan] = _plan([shot], resume=True, part=None, chunk_frames=0)
    [unit] = plan.units
    assert plan.kept == 3 and unit.frames == [1003] and unit.before == {str(truncated): file_stamp(truncated)}
    assert unit.poll() == 0  # the truncated file is still there: not written yet
    assert run_shot(shot, {}, part=[1003]).written == [1003]  # what the task does (resume)
    assert unit.poll() == 1 and unit.seen == 1


def test_sweep_removes_only_this_shots_temp_files(tmp_path):
    shot = batch.Shot(name="s", input="", output=str(tmp_path / "s.####.exr"))
    mine = tmp_path / ".s.1002.exr.0a1b2c3d.tmp"  # what io.atomic leaves when a worker is killed mid-write
    other = tmp_path / ".t.1002.exr.0a1b2c3d.tmp"  # another shot's: maybe being written right now
    frame = tmp_path / "s.1002.exr"
    for path in (mine, other, frame):
        path.write_bytes(b"x")
    _sweep_temp_files(shot, [1001, 1002])
    assert not mine.exists() and other.exists() and frame.exists()
    os.unlink(other)


def test_an_address_nobody_answers_fails_in_seconds():
    from mam2_server.batch.ray_runner import RayBatchError, _check_reachable

    with pytest.raises(RayBatchError, match="no Ray cluster answers there"):
        _check_reachable("127.0.0.1:1")
    _check_reachable("auto")  # Ray looks for the cluster itself


def test_cluster_options_without_a_cluster_are_refused(clip, tmp_path, capsys):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"shots": [{"name": "s", "input": str(clip / "plate" / "plate.####.exr"),
                                               "output": "a/s.####.exr", "prompts": str(clip / "prompts.json")}]}))
    assert main(["batch", str(manifest), "--chunk-frames", "3", "--gpus-per-shot", "1"]) == 2
    assert "--chunk-frames, --gpus-per-shot: only with --ray or --openjd" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["batch", str(manifest), "--ray", "local", "--openjd", str(tmp_path / "b")])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
