"""`mam2 batch --openjd DIR`: the job bundle passes `openjd check` and `openjd run` mattes every
shot and chunk as a one-machine batch does, bit for bit (the `openjd-cli` package)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mam2_server.cli import main

OPENJD = Path(sys.executable).parent / "openjd"
needs_openjd = pytest.mark.skipif(not OPENJD.exists() and not shutil.which("openjd"),
                                  reason="needs openjd-cli (python3 install.py --dev)")


def openjd(*args: str) -> subprocess.CompletedProcess:
    exe = str(OPENJD) if OPENJD.exists() else shutil.which("openjd")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    assert main(["synth", str(out), "--kinds", "solid", "--frames", "4", "--size", "96x64", "--seeds", "0,1"]) == 0
    return out


def write_manifest(folder: Path, clips: Path) -> Path:
    key = json.loads((clips / "solid_1" / "prompts.json").read_text())[0]
    shots = [{"name": "sh10", "input": str(clips / "solid_0" / "plate" / "plate.####.exr"),
              "output": "alpha/sh10.####.exr", "prompts": str(clips / "solid_0" / "prompts.json")},
             {"name": "sh20", "input": str(clips / "solid_1" / "plate" / "plate.####.exr"),
              "output": "alpha/sh20.####.exr", "prompts": [key, {**key, "frame": 1003}]}]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"defaults": {"engine": "classic"}, "shots": shots}))
    return folder / "manifest.json"


@pytest.mark.slow
@needs_openjd
def test_bundle_checks_and_runs_like_a_local_batch(clips, tmp_path, capsys):
    local = write_manifest(tmp_path / "local", clips)
    assert main(["batch", str(local), "--quiet"]) == 0
    farm = write_manifest(tmp_path / "farm", clips)
    bundle = tmp_path / "bundle"
    assert main(["batch", str(farm), "--openjd", str(bundle), "--chunk-frames", "2"]) == 0
    assert "openjd check" in capsys.readouterr().out
    assert not (tmp_path / "farm" / "alpha").exists(), "--openjd must not run anything"

    template = json.loads((bundle / "template.json").read_text())
    assert template["specificationVersion"] == "jobtemplate-2023-09"
    [step] = template["steps"]
    params = {p["name"]: p["range"] for p in step["parameterSpace"]["taskParameterDefinitions"]}
    # sh20 has keyframes 1001 and 1003: its two passes are two tasks; sh10 has one pass: one task
    assert list(zip(params["Shot"], params["Frames"])) == [("sh10", "1001-1004"), ("sh20", "1001-1002"),
                                                           ("sh20", "1003-1004")]
    values = {v["name"]: v["value"] for v in json.loads((bundle / "parameter_values.json").read_text())
              ["parameterValues"]}
    assert values["Manifest"] == str(farm.resolve()) and Path(values["Venv"], "bin", "mam2").exists()

    check = openjd("check", str(bundle / "template.json"))
    assert check.returncode == 0, check.stdout + check.stderr
    run = openjd("run", str(bundle / "template.json"), "--step", "Matte",
                 *[a for name, value in values.items() for a in ("-p", f"{name}={value}")])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]

    farm_alpha, local_alpha = tmp_path / "farm" / "alpha", tmp_path / "local" / "alpha"
    names = sorted(p.name for p in farm_alpha.iterdir())
    assert names == sorted(p.name for p in local_alpha.iterdir()) and len(names) == 8
    for name in names:
        assert (farm_alpha / name).read_bytes() == (local_alpha / name).read_bytes(), name
    logs = sorted(p.name for p in Path(values["LogDir"]).iterdir())
    assert logs == ["sh10.1001-1004.jsonl", "sh20.1001-1002.jsonl", "sh20.1003-1004.jsonl"]
    record = json.loads((Path(values["LogDir"]) / "sh20.1003-1004.jsonl").read_text())
    assert record["status"] == "done" and record["frames"] == "1003-1004" and record["written"] == 2


def test_bundle_refuses_shots_with_problems_and_foreign_folders(clips, tmp_path, capsys):
    manifest = write_manifest(tmp_path, clips)
    data = json.loads(manifest.read_text())
    data["shots"][1]["input"] = str(tmp_path / "nowhere" / "plate.####.exr")
    manifest.write_text(json.dumps(data))
    assert main(["batch", str(manifest), "--openjd", str(tmp_path / "b1")]) == 2
    err = capsys.readouterr().err
    assert "shot sh20: input" in err and "no plates found" in err and not (tmp_path / "b1").exists()

    data["shots"] = data["shots"][:1]
    manifest.write_text(json.dumps(data))
    (tmp_path / "b2").mkdir()
    (tmp_path / "b2" / "notes.txt").write_text("mine")
    assert main(["batch", str(manifest), "--openjd", str(tmp_path / "b2")]) == 2
    assert "not a job bundle" in capsys.readouterr().err
    assert main(["batch", str(manifest), "--openjd", str(tmp_path / "b3"), "--gpus-per-shot", "1"]) == 0
    amounts = json.loads((tmp_path / "b3" / "template.json").read_text())["steps"][0]["hostRequirements"]["amounts"]
    assert {"name": "amount.worker.gpu", "min": 1} in amounts


def test_a_task_gets_a_gpu_by_default_when_its_engine_runs_a_network(clips, tmp_path):
    """The default comes from the engines' `needs_gpu` flag (read without building them): hybrid and
    mam2 want one unless pinned to the CPU; classic does not."""
    from mam2_server.batch import load_manifest
    from mam2_server.batch.openjd import write_bundle

    manifest = write_manifest(tmp_path, clips)
    data = json.loads(manifest.read_text())
    for case, defaults, gpu in [("classic", {"engine": "classic"}, False),
                                ("hybrid", {"engine": "hybrid", "checkpoint": "/farm/sam2.1_hiera_large.pt"}, True),
                                ("mam2_cpu", {"engine": "mam2", "device": "cpu"}, False)]:
        manifest.write_text(json.dumps({**data, "defaults": defaults}))
        loaded = load_manifest(manifest)
        template = json.loads(write_bundle(loaded, loaded.shots, tmp_path / case).read_text())
        amounts = template["steps"][0]["hostRequirements"]["amounts"]
        assert ({"name": "amount.worker.gpu", "min": 1} in amounts) is gpu, case


def _task_args(bundle: Path) -> list[str]:
    return json.loads((bundle / "template.json").read_text())["steps"][0]["script"]["actions"]["onRun"]["args"]


def test_tasks_repeat_the_command_lines_overrides(clips, tmp_path, monkeypatch):
    """--engine / --checkpoint / --device / --no-resume planned the bundle: every task runs with them."""
    manifest = write_manifest(tmp_path, clips)
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({"shots": data["shots"]}))  # no defaults: the command line's engine applies
    monkeypatch.chdir(tmp_path)
    assert main(["batch", str(manifest), "--openjd", str(tmp_path / "plain")]) == 0
    plain = _task_args(tmp_path / "plain")
    assert not {"--engine", "--checkpoint", "--device", "--no-resume"} & set(plain)
    assert main(["batch", str(manifest), "--openjd", str(tmp_path / "b"), "--engine", "classic", "--device", "cpu",
                 "--checkpoint", "weights/mam2.safetensors", "--no-resume"]) == 0
    args = _task_args(tmp_path / "b")
    assert args[:len(plain)] == plain and args[len(plain):] == [
        "--engine", "classic", "--checkpoint", str(tmp_path / "weights" / "mam2.safetensors"),  # absolute
        "--device", "cpu", "--no-resume"]
    if OPENJD.exists() or shutil.which("openjd"):
        check = openjd("check", str(tmp_path / "b" / "template.json"))
        assert check.returncode == 0, check.stdout + check.stderr


def test_more_tasks_than_a_step_holds_are_refused(clips, tmp_path, capsys, monkeypatch):
    from mam2_server.batch import load_manifest
    from mam2_server.batch.openjd import MAX_TASKS, OpenJDError, job_template

    manifest = load_manifest(write_manifest(tmp_path, clips))
    units = [("sh10", str(1001 + i)) for i in range(MAX_TASKS + 1)]
    assert MAX_TASKS == 1024 and len(job_template(manifest, units[:MAX_TASKS])["steps"]) == 1
    with pytest.raises(OpenJDError, match=r"1025 tasks: an Open Job Description step holds at most 1024"):
        job_template(manifest, units)
    monkeypatch.setattr("mam2_server.batch.openjd.MAX_TASKS", 2)  # the CLI: exit 2, nothing written
    assert main(["batch", str(manifest.path), "--openjd", str(tmp_path / "big"), "--chunk-frames", "2"]) == 2
    assert "3 tasks: an Open Job Description step holds at most 2" in capsys.readouterr().err
    assert not (tmp_path / "big").exists()
