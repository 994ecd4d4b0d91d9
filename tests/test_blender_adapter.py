"""The Blender add-on (host_plugins/blender): its bpy-free half here, the rest in real Blender.

bpy (Blender as a module, numpy<2) lives in .venv-bpy (`python3 install.py --dev`), so the
add-on runs in a subprocess: tests/blender_check.py registers it, drives its operators
against a real `mam2 serve` and reports what it saw. Background Blender has no event loop,
so Track runs inline there; one re-track, a cancel and a dead server run on the worker
thread, with the checker calling the add-on's timer callback by hand (`ops.pump`).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_server_support import ROOT, ServerProcess, clip, free_port

from mam2_server.io import read_image, write_image

pytestmark = pytest.mark.timeout(60)
ADDON = ROOT / "host_plugins" / "blender"
# MAM2_BPY_PYTHON: another bpy's Python, e.g. a venv with bpy==4.5.15 for the 4.x compositor API
BPY_PYTHON = Path(os.environ.get("MAM2_BPY_PYTHON") or ROOT / ".venv-bpy" / "bin" / "python")
W, H = 64, 48

if str(ROOT / "host_plugins") not in sys.path:
    sys.path.append(str(ROOT / "host_plugins"))  # mam2_client, as the add-on's __init__ does
_spec = importlib.util.spec_from_file_location("mam2_blender_jobspec", ADDON / "jobspec.py")
jobspec = sys.modules["mam2_blender_jobspec"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(jobspec)


@pytest.fixture
def plates(tmp_path):
    for i, img in enumerate(clip(6), start=1):
        write_image(tmp_path / f"plate.{i:04d}.exr", img, pixel_type="float")
    return tmp_path


def values(plates: Path, **kw) -> jobspec.PanelValues:
    base = dict(address="tcp://127.0.0.1:5557", start_server=False, engine="default",
                image_path=str(plates / "plate.0001.exr"), image_source="SEQUENCE", image_name="plate.0001.exr",
                use_image_range=True, frame_first=1, frame_last=100, prompt_frame=1, use_box=True,
                box_min=(4.0, 28.0), box_max=(30.0, 46.0), points=(), output_dir=str(plates / "alpha"),
                blend_file="/shots/a.blend", scene="Scene")
    return jobspec.PanelValues(**{**base, **kw})


# --- bpy-free half (main venv) ---------------------------------------------------------------

def test_sequence_pattern_and_frames_on_disk(plates):
    pattern = jobspec.sequence_pattern(str(plates / "plate.0003.exr"))
    assert pattern == str(plates / "plate.####.exr")
    assert jobspec.sequence_frames(pattern) == [1, 2, 3, 4, 5, 6]
    assert jobspec.sequence_pattern("/a/v2/still.exr") == "/a/v2/still.exr"
    assert jobspec.sequence_pattern("/a/sh10_0100_v2.exr") == "/a/sh10_0100_v#.exr"  # Blender: last digit run


def test_exr_size_reads_the_header(plates, tmp_path):
    assert jobspec.exr_size(str(plates / "plate.0001.exr")) == (W, H)
    # a bbox inside the frame: the display window is the frame the server and the y flip use
    from mam2_server.io.image import ImageInfo
    info = ImageInfo(x=5, y=4, width=20, height=10, full_x=0, full_y=0, full_width=W, full_height=H,
                     channels=("R", "G", "B"))
    write_image(tmp_path / "bbox.exr", np.zeros((10, 20, 3), np.float32), channels=("R", "G", "B"), info=info)
    assert jobspec.exr_size(str(tmp_path / "bbox.exr")) == (W, H)
    (plates / "x.exr").write_bytes(b"nope")
    with pytest.raises(jobspec.Refused, match="not an OpenEXR"):
        jobspec.exr_size(str(plates / "x.exr"))


def test_build_job_maps_the_panel_to_a_track_job(plates):
    job = jobspec.build_job(values(plates, points=((20.0, 40.0, 1),)), retrack=False, current_frame=4)
    assert (job.first, job.last, job.width, job.height, job.prompt.frame) == (1, 6, W, H, 1)
    assert job.plates[6] == str(plates / "plate.0006.exr") and job.prompt.box == (4.0, 28.0, 30.0, 46.0)
    assert job.prompt.points == ((20.0, 40.0, 1),) and job.shot.startswith("blender_Scene_plate.0001.exr_")
    assert job.output_pattern == str(plates / "alpha" / f"{job.shot}.alpha.%04d.exr")
    again = jobspec.build_job(values(plates), retrack=True, current_frame=4)
    assert again.retrack and again.prompt.frame == 4 and again.shot == job.shot
    part = jobspec.build_job(values(plates, use_image_range=False, frame_first=2, frame_last=5, prompt_frame=3),
                             retrack=False, current_frame=1)
    assert (part.first, part.last, sorted(part.plates)) == (2, 5, [2, 3, 4, 5]) and part.shot != job.shot
    assert jobspec.image_user_frames(1001, 1010) == (1001, 1000, 10)


@pytest.mark.parametrize("change, expected", [
    (dict(image_path=""), "no input image"),
    (dict(image_source="MOVIE"), "is a movie"),
    (dict(image_path="/nowhere/plate.0001.exr"), "no files on disk match"),
    (dict(use_image_range=False, frame_first=1, frame_last=8), "2 plate files of 1-8 are missing"),
    (dict(use_image_range=False, frame_first=5, frame_last=2), "is empty"),
    (dict(box_max=(4.0, 46.0)), "is empty"),
    (dict(use_box=False), "no prompt"),
    (dict(prompt_frame=9), "outside the tracked range 1-6"),
    (dict(address="  "), "address is empty"),
])
def test_build_job_refuses_with_a_reason(plates, change, expected):
    with pytest.raises((jobspec.Refused, jobspec.core.PromptError), match=expected):
        jobspec.build_job(values(plates, **change), retrack=False, current_frame=1)


def test_addon_files_do_not_import_bpy_in_the_bpy_free_module():
    assert "import bpy" not in (ADDON / "jobspec.py").read_text()
    manifest = (ADDON / "blender_manifest.toml").read_text()
    for key in ('id = "mam2_matte"', 'blender_version_min = "4.2.0"', "[permissions]"):
        assert key in manifest


# --- real Blender (.venv-bpy) --------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("blender") / "cache", delay=0.05) as proc:
        yield proc


def test_the_addon_in_blender_tracks_retracks_cancels_and_reports_errors(server, plates, tmp_path):
    if not BPY_PYTHON.exists() or subprocess.run([str(BPY_PYTHON), "-c", "import bpy"], capture_output=True,
                                                 timeout=30).returncode != 0:
        pytest.skip(f"no bpy at {BPY_PYTHON}: run `python3 install.py --dev` (bpy==5.0.1 needs "
                    "Python 3.11 and network access to PyPI)")
    cfg = tmp_path / "cfg.json"
    out = tmp_path / "report.json"
    cfg.write_text(json.dumps({"address": server.address, "dead_address": f"tcp://127.0.0.1:{free_port()}",
                               "plates": str(plates), "output_dir": str(tmp_path / "alpha")}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(BPY_PYTHON), str(HERE / "blender_check.py"), str(cfg), str(out)], env=env,
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["operators"] == [True, True, True]
    assert r["no_image"][0] == ["RAISED"] and "no input image" in r["no_image"][1]

    ret, err, status, shot, _ = r["track"]
    assert ret == ["FINISHED"] and not err and status.startswith("Done: 6 frames computed"), r["track"]
    pattern = str(tmp_path / "alpha" / f"{shot}.alpha.%04d.exr")
    assert r["files"] == [os.path.basename(pattern % f) for f in range(1, 7)]  # no temp files left
    alpha = read_image(pattern % 1).pixels[..., 0]
    assert alpha[2:20, 5:29].mean() > alpha[30:, 5:29].mean() + 0.3  # the box (y up) is the top rows
    node = r["alpha_node"]
    assert node["filepath"] == pattern % 1 and node["source"] == "SEQUENCE" and node["colorspace"] == "Non-Color"
    assert node["frames"] == [1, 0, 6] and node["plate_frames"] == [6]
    assert node["set_alpha_inputs"] == {"Image": ["MAM2 Plate"], "Alpha": ["MAM2 Alpha"]} and node["output_linked"]

    a = r["retrack_async"]
    assert a["ret"] == [["FINISHED"], ""] and a["timer_registered"] and a["thread_alive"]
    assert a["status"].startswith("Done: 3 frames computed, 3 cached"), a
    assert not a["running"] and not a["timer_left"] and any(s.startswith("frame") for s in a["seen"]), a
    assert r["second_start"][0] == ["RAISED"] and "already going" in r["second_start"][1]

    assert r["cancel"][0] == [["FINISHED"], ""] and r["cancel"][1] == ["FINISHED"]
    assert r["cancel"][2].startswith("Cancelled"), r["cancel"]
    assert r["cancel_nothing"] == ["CANCELLED"]
    assert "is empty" in r["empty_box"][1] and "outside the tracked range 1-6" in r["prompt_outside"][1]
    assert r["dead_async"][1].startswith("Error: no MAM2 server answers at tcp://127.0.0.1:"), r["dead_async"]
    assert r["dead_inline"][0] == ["RAISED"] and "no MAM2 server answers" in r["dead_inline"][1]
    assert r["dead_inline"][2].startswith("Error:") and r["unregistered"]
