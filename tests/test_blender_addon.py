"""The Blender add-on in real Blender (bpy 5.0.1 in .venv-bpy, 4.5.15 in .venv-bpy45), as the artist gets it.

Each test plays a scenario of tests/blender_check.py in a bpy subprocess against a real
`mam2 serve` (the fast test engine) and checks what the artist gets: the rendered
compositor pixels, the alpha files, the server's shots, prompts and masks, the processes.
The plate is 6 scene-linear EXR frames numbered 1001-1006, opened with Blender's default
frame mapping (file 1001 on scene frame 1).
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_server_support import ROOT, ServerProcess, clip, free_port  # noqa: E402

from mam2_server.io import read_image, write_image  # noqa: E402
from mam2_server.package.blender import stage_addon  # noqa: E402

pytestmark = pytest.mark.timeout(180)
W, H, FIRST, N = 80, 48, 1001, 6
BOX = (4.0, 16.0, 36.0, 40.0)  # left, bottom, right, top (origin bottom-left): the bright square's rows
# Mask layers in Blender's mask space (x over the width; y scaled like x, centred): squares placed off
# the vertical centre, so a flipped mask cannot pass.
MASK_LAYERS = {"Always": (0.05, 0.45, 0.30, 0.75), "Animated": (0.60, 0.35, 0.90, 0.55)}
BPY = {"5.0": ROOT / ".venv-bpy" / "bin" / "python", "4.5": ROOT / ".venv-bpy45" / "bin" / "python"}


def bpy_python(version: str) -> Path:
    python = BPY[version]
    if not python.exists() or subprocess.run([str(python), "-c", "import bpy"], capture_output=True,
                                             timeout=60).returncode != 0:
        pytest.skip(f"no bpy {version} at {python}: run `python3 install.py --dev` (bpy needs Python 3.11 "
                    "and PyPI)")
    return python


@pytest.fixture(params=sorted(BPY, reverse=True))
def blender(request) -> Path:
    return bpy_python(request.param)


@pytest.fixture(scope="module")
def addons(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("addons")
    stage_addon(folder)
    return folder


@pytest.fixture(scope="module")
def plates(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plates")
    for i, img in enumerate(clip(N, w=W, h=H), start=FIRST):
        write_image(folder / f"plate.{i:04d}.exr", img, pixel_type="float")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("server") / "cache", delay=0.02) as proc:
        yield proc


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("slow") / "cache", delay=0.4) as proc:
        yield proc


def server_command(tmp: Path) -> tuple[Path, Path]:
    """A `mam2` the add-on may start (fast test engine, private cache): (command, cache dir)."""
    cache = tmp / "own-cache"
    script = tmp / "mam2-test"
    script.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT}:{HERE} exec {sys.executable} -m mam2_server.cli \"$@\" "
                      f"--engine-factory test_server_support:fast_engine --cache-dir {cache}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, cache


def play(python: Path, scenario: str, tmp: Path, timeout: float = 150, env: dict | None = None, **cfg) -> dict:
    """Run one scenario of blender_check.py; its report."""
    config, report = tmp / f"{scenario}.json", tmp / f"{scenario}.report.json"
    config.write_text(json.dumps({"work": str(tmp), "width": W, "height": H, "box": BOX,
                                  "mask_layers": MASK_LAYERS, "animated_layer": "Animated", **cfg}))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    clean["BLENDER_USER_RESOURCES"] = str(tmp / "blender-user")  # never the real ~/.config/blender
    proc = subprocess.run([str(python), str(HERE / "blender_check.py"), scenario, str(config), str(report)],
                          env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(report.read_text())


def server_alphas(server, shot: str) -> dict[int, np.ndarray]:
    with server.client() as client:
        found, missing = client.get_alpha(shot, range(FIRST, FIRST + N))
    assert not missing, missing
    return {f: a.to_numpy() for f, a in found.items()}


def alive(pid: int) -> bool:
    """True while the process runs (a zombie nobody reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


def test_rendered_compositor_is_the_plate_times_the_servers_alpha(blender, addons, plates, server, tmp_path):
    r = play(blender, "render_matte", tmp_path, addons=str(addons), plates=str(plates), address=server.address)
    assert r["track"] == [["FINISHED"], ""] and r["status"].startswith("Done: 6 frames computed"), r["status"]
    # the artist's node is read, never changed; the alpha node plays the alpha files with its timing
    assert r["plate_before"] == r["plate_after"] == {"name": "Plate", "timing": [1, 1000, 6, False],
                                                     "image": "plate.1001.exr"}
    assert r["alpha"]["timing"] == [1, 1000, 6, False] and r["alpha_colorspace"] == "Non-Color"
    assert r["set_alpha"] == {"Image": [["Plate", "Image"]], "Alpha": [["MAM2 Alpha", "Alpha"]]}
    assert r["output"] == {"Image": [["MAM2 Set Alpha", "Image"]]}
    # alphas next to the .blend, stored relative
    assert r["files"] == [f"alpha.{f}.exr" for f in range(FIRST, FIRST + N)]
    assert r["alpha_path"] == r["saved_alpha_path"] == f"//mam2/{r['shot']}/alpha.{FIRST}.exr"
    alphas = server_alphas(server, r["shot"])
    for scene_frame, path in r["renders"].items():
        file_frame = int(scene_frame) + FIRST - 1
        rendered = read_image(path).pixels
        alpha = alphas[file_frame]
        plate = read_image(plates / f"plate.{file_frame}.exr").pixels
        assert rendered.shape == (H, W, 4)
        # exact: the compositor passes the float alpha through and multiplies in float32, as numpy does
        np.testing.assert_array_equal(rendered[..., 3], alpha, err_msg=f"alpha, scene frame {scene_frame}")
        np.testing.assert_array_equal(rendered[..., :3], plate * alpha[..., None],
                                      err_msg=f"RGB = plate x alpha, scene frame {scene_frame}")
        on_disk = read_image(tmp_path / "mam2" / r["shot"] / f"alpha.{file_frame}.exr").pixels[..., 0]
        np.testing.assert_array_equal(on_disk, alpha)
    assert len({a.tobytes() for a in alphas.values()}) == N  # six different frames, not one held
    artists = [] if blender == BPY["5.0"] else ["Render Layers"]
    assert r["render_layers"] == {"Scene": [], "artist comp": artists}, r["render_layers"]


def test_each_key_keeps_its_own_prompt_and_the_shot_belongs_to_the_scene(blender, addons, plates, server, tmp_path):
    r = play(blender, "keys_and_shots", tmp_path, addons=str(addons), plates=str(plates), address=server.address)
    steps = {s["label"]: s for s in r["steps"]}
    assert all(s["result"] == [["FINISHED"], ""] for s in r["steps"]), r["steps"]
    assert steps["first"]["status"].startswith("Done: 6 frames computed, 0 cached")
    # a second key re-tracks from its frame; the first key's frames stay as they were
    assert steps["second key"]["keys"] == [[1001, "box"], [1004, "box, 1 pt"]]
    assert steps["second key"]["status"].startswith("Done: 3 frames computed, 3 cached")
    first, second = steps["first"]["digests"], steps["second key"]["digests"]
    assert [first[f"alpha.{f}.exr"] == second[f"alpha.{f}.exr"] for f in range(1001, 1007)] == [True] * 3 + [False] * 3
    assert steps["again"]["status"].startswith("Done: 0 frames computed, 6 cached")
    assert steps["first key edited"]["status"].startswith("Done: 3 frames computed, 3 cached")
    assert "shows no plate frame" in r["outside"][1] and r["jump"] == [[["FINISHED"], ""], 4]
    # deleting the key removes its prompt on the server; its frames come from the first key again
    assert r["remove"] == [["FINISHED"], ""]
    assert steps["second key deleted"]["status"].startswith("Done: 3 frames computed, 3 cached")
    with server.client() as client:
        shots = {s["shot"]: s for s in client.status()["shots"]}
    assert shots[steps["first"]["shot"]]["keyframes"] == [1001]
    # Save As and a renamed scene: the same shot, nothing recomputed; a new file at the same path: a new shot
    assert r["uuid_kept"] and steps["save as + rename"]["shot"] == steps["first"]["shot"]
    assert steps["save as + rename"]["status"].startswith("Done: 0 frames computed, 6 cached")
    # the Image Editor's drag (corners in any order, clamped to the frame) and clicks
    assert r["drawn"] == [[W / 4, H * 3 / 4], [W * 3 / 4, H], [[[W / 2, H / 2], "FG"], [[3.0, 4.0], "BG"]],
                          "box, 2 pt"]
    assert r["draw_modal"] == [["RUNNING_MODAL"]] * 10 + [["PASS_THROUGH"], ["FINISHED"]]
    # the key made on file frame 1003 (a copy of its nearest, then drawn over): box, then + fg, + bg points
    box_min, box_max, points = r["draw_modal_key"]
    assert box_min == [W / 4, H / 4] and box_max == [W / 2, H * 3 / 4], r["draw_modal_key"]
    assert points[-2:] == [[[W * 3 / 4, H / 2], "FG"], [[W / 8, H / 8], "BG"]], points
    # the panels (drawn with a stand-in layout: every property, operator and icon they name exists)
    compositor, image, server_panel = (r["panels"][n] for n in ("MAM2_PT_compositor", "MAM2_PT_image",
                                                                 "MAM2_PT_compositor_server"))
    assert ["label", "Plate: scene 1-6 = files 1001-1006"] in compositor
    assert ["label", "1"] in compositor and ["label", "file 1001"] in compositor and ["label", "box, 2 pt"] in compositor
    assert ["operator", "mam2.draw_prompt"] in image and ["operator", "mam2.draw_prompt"] not in compositor
    assert [["operator", op] in compositor for op in ("mam2.track", "mam2.cancel", "mam2.key_add")] == [True] * 3
    assert ["set", "action", "RESTART"] in server_panel and ["prop", "address"] in server_panel
    assert r["new_uuid"] and steps["new file, same path"]["shot"] != steps["first"]["shot"]
    assert steps["new file, same path"]["status"].startswith("Done: 6 frames computed, 0 cached")


def test_colour_space_and_mask_keys_reach_the_server(blender, addons, plates, server, tmp_path):
    r = play(blender, "colour_and_masks", tmp_path, addons=str(addons), plates=str(plates), address=server.address)
    (aces, aces_status, _), (rec709, rec709_status, _) = r["shots"]["ACEScg"], r["shots"]["Linear Rec.709"]
    assert aces_status.startswith("Done: 6 frames computed") and rec709_status.startswith("Done: 6 frames computed")
    assert aces != rec709  # another colour space is another shot, never the old cached alphas
    shots = server.cache_dir / "shots"
    assert json.loads((shots / aces / "shot.json").read_text())["colorspace"] == "ACEScg"
    assert json.loads((shots / rec709 / "shot.json").read_text())["colorspace"] == "Linear Rec.709 (sRGB)"
    # the engine saw the plate in its colour space: the same prompt from a plain client agrees
    with server.client() as client:
        client.open_shot("direct_acescg", first=FIRST, last=FIRST + N - 1, width=W, height=H, colorspace="ACEScg")
        client.put_frames("direct_acescg", {f: str(plates / f"plate.{f}.exr") for f in range(FIRST, FIRST + N)},
                          encoding="path")
        client.add_prompt("direct_acescg", FIRST, box=(BOX[0], H - BOX[3], BOX[2], H - BOX[1]))
        direct = client.propagate("direct_acescg", include_cached=True).alphas
    blender_aces = server_alphas(server, aces)
    for f in range(FIRST, FIRST + N):
        np.testing.assert_array_equal(blender_aces[f], direct[f].to_numpy())
    assert any(not np.array_equal(blender_aces[f], a) for f, a in server_alphas(server, rec709).items())

    # Mask keys: rasterised on their own frames (an animated layer fades out by scene frame 4), y flipped
    shot, status, result, frame_after, summaries = r["mask_track"]
    assert result == [["FINISHED"], ""] and status.startswith("Done"), status
    assert frame_after == 2 and summaries == ["mask Roto", "mask Roto"] and r["scenes_left"] == ["Scene"]
    masks = {f: read_image(shots / shot / "prompts" / f"{f}.mask.exr").pixels[..., 0] for f in (1001, 1004)}

    def square(name):  # interior pixels, top-left origin, of a mask-space square
        x0, y0, x1, y1 = MASK_LAYERS[name]
        rows = (H / 2 + (np.array([y1, y0]) - 0.5) * W)  # bottom-left pixel rows of the top and bottom edges
        top, bottom = int(H - rows[0]) + 1, int(H - rows[1]) - 1
        return slice(top, bottom), slice(int(x0 * W) + 1, int(x1 * W) - 1)

    always, animated = square("Always"), square("Animated")
    for f, mask in masks.items():
        assert mask[always].min() == 1.0, f
        outside = np.ones_like(mask, bool)
        for rows, cols in (always, animated):
            outside[rows.start - 2:rows.stop + 2, cols.start - 2:cols.stop + 2] = False
        assert mask[outside].max() == 0.0, f
    assert masks[1001][animated].min() == 1.0 and masks[1004][animated].max() == 0.0
    # a plate Blender opened as UDIM tiles is refused with the way out; MAM2's Open Plate makes the sequence
    assert r["udim"][0] == ["RAISED"] and "opened as UDIM tiles" in r["udim"][2], r["udim"]
    assert r["open_plate"] == [["FINISHED"], ""]
    assert r["opened"] == ["SEQUENCE", "plate.1001.exr", {"name": "MAM2 Plate", "timing": [1, 1000, 6, False],
                                                          "image": "plate.1001.exr"}, [W, H]]
    # an unsaved .blend: Track asks for a folder, and the chosen one is used as it was given
    assert r["unsaved"][0] == ["RAISED"] and "not saved" in r["unsaved"][2], r["unsaved"]
    folder = str(tmp_path / "chosen")
    assert r["unsaved_folder"][:3] == [["FINISHED"], "", folder] and r["unsaved_folder"][3].startswith("Done")
    assert r["unsaved_files"] == [f"alpha.{f}.exr" for f in range(FIRST, FIRST + N)]


def test_live_runs_survive_the_artist(blender, addons, plates, slow_server, tmp_path):
    r = play(blender, "live_runs", tmp_path, addons=str(addons), plates=str(plates), address=slow_server.address,
             dead_address=f"tcp://127.0.0.1:{free_port()}")
    assert r["start"] == [["FINISHED"], ""] and r["timer_persistent"]
    assert r["second_start"][0] == ["RAISED"] and "already tracking" in r["second_start"][1]
    # live preview: wired and showing finished frames while the rest still computes
    preview = r["preview"]
    assert preview["running"] and preview["alpha_node"] and preview["previews"] >= 1, preview
    assert 2 <= len(preview["files"]) < N, preview
    rendered = read_image(r["preview_render"]["1"]).pixels[..., 3]
    status, running, seen, previews = r["finished"]
    assert status.startswith("Done: 6 frames computed") and not running and previews >= 2, r["finished"]
    np.testing.assert_array_equal(rendered, read_image(tmp_path / "preview_alpha.exr").pixels[..., 0])
    assert any(s.startswith("frame") for s in seen), seen

    assert r["cancel"][0] == [["FINISHED"], ""] and r["cancel"][1] == [["FINISHED"], ""]
    assert r["cancel"][2].startswith("Cancelled"), r["cancel"]
    assert r["cancel_nothing"] == [["CANCELLED"], ""]
    deleted = r["node_deleted"]
    assert deleted["status"].startswith("Done"), deleted
    assert deleted["set_alpha"]["Image"] == [["MAM2 Plate", "Image"]] and deleted["plate"]["timing"] == [1, 1000, 6, False]
    # File > New and File > Revert mid-run: the old run is cancelled and let go, nothing is stuck
    assert r["after_new"] == {"tasks": 0, "old_cancelled": True, "old_timer": True}
    assert r["new_file_track"][0] == [["FINISHED"], ""] and r["new_file_track"][2].startswith("Done: 6 frames")
    assert "MAM2 Alpha" in r["old_run_left_new_file_alone"]
    assert r["after_open"]["tasks"] == 0 and r["after_open"]["old_cancelled"] and r["after_open"]["old_done"]
    assert "gone" in r["image_deleted"] and r["image_deleted"].startswith("Done"), r["image_deleted"]
    assert r["dead"][1].startswith("Error: no MAM2 server answers at tcp://127.0.0.1:"), r["dead"]
    assert r["dead_inline"][0] == ["RAISED"] and r["dead_inline"][2].startswith("Error:") and r["unregistered"]


def test_a_bug_in_the_timer_ends_the_run_with_a_message_and_track_works_again(blender, addons, plates, slow_server,
                                                                               tmp_path):
    r = play(blender, "timer_failures", tmp_path, addons=str(addons), plates=str(plates), address=slow_server.address)
    # redraw tags the editors through Area.tag_redraw, a function Blender's Area has (tagredraw is not)
    assert r["redrawn"] == ["NODE_EDITOR", "IMAGE_EDITOR"] and r["area_functions"] == [True, False]
    # an exception in the timer's drain (the live preview's redraw) or in applying the result: the run ends,
    # the artist is told, the timer goes, the worker is cancelled and nothing is left "already tracking"
    for case in ("redraw_fails", "finish_fails"):
        c = r[case]
        assert c["started"] == [["FINISHED"], ""] and c["ended"], (case, c)
        assert c["status"].startswith("Error: internal error: AttributeError") and "tagredraw" in c["status"], c
        assert not c["running"] and not c["timer"] and c["cancelled"] and not c["worker_alive"], (case, c)
        assert [level for level, _ in c["reports"]] == ["ERROR"] and "tagredraw" in c["reports"][0][1], c
    assert r["after"][0] == [["FINISHED"], ""] and r["after"][1].startswith("Done:"), r["after"]
    # Add Key copied its nearest key's box and points every time while the collection grew to 129 keys
    assert r["key_frames"] and r["copied_keys"] == [
        [False, [1.5, 2.5], [30.25, 40.75], [[[3.0, 4.0], "FG"], [[5.5, 6.5], "BG"], [[7.0, 8.0], "FG"]]]]


@pytest.fixture(scope="module")
def block_plates(tmp_path_factory) -> Path:
    """6 plates, files 998-1003: across a shot block boundary (track.SHOT_BLOCK)."""
    folder = tmp_path_factory.mktemp("block_plates")
    for i, img in enumerate(clip(N, w=W, h=H), start=998):
        write_image(folder / f"plate.{i:04d}.exr", img, pixel_type="float")
    return folder


def test_the_shot_keeps_its_span_and_a_copied_scene_gets_its_own_shot(blender, addons, block_plates, server,
                                                                       tmp_path):
    r = play(blender, "shots_and_scenes", tmp_path, addons=str(addons), plates=str(block_plates),
             address=server.address)
    steps = {s["label"]: s for s in r["steps"]}
    assert all(s["result"] == [["FINISHED"], ""] and s["status"].startswith("Done") for s in r["steps"]), r["steps"]
    narrow, widened, again, reopened = (steps[k] for k in ("narrow", "widened", "narrowed again", "reopened"))
    assert narrow["span"] == [1000, 1999] and widened["span"] == [0, 1999]
    assert widened["shot"] != narrow["shot"]  # out of the span the server fixed: another shot
    # narrowed inside the widened span (and again after saving and reopening): the same shot, its alphas cached
    assert again["shot"] == reopened["shot"] == widened["shot"] and again["span"] == reopened["span"] == [0, 1999]
    assert again["status"].startswith("Done: 0 frames computed, 3 cached"), again["status"]
    assert reopened["status"].startswith("Done: 0 frames computed, 2 cached"), reopened["status"]
    # a copied scene: the original acting first keeps its UUID, shot and cache; the copy gets new ones
    assert r["copy_names"] == ["Scene", "Scene.001", True]
    original, copy = steps["original first"], steps["copy second"]
    assert original["uuid"] == widened["uuid"] and original["shot"] == widened["shot"]
    assert original["status"].startswith("Done: 0 frames computed, 6 cached"), original["status"]
    assert copy["uuid"] != original["uuid"] and copy["shot"] != original["shot"]
    # the other order: the copy acts first (Add Key), then the original still keeps its shot
    assert r["copy_key"] == [["FINISHED"], ""]
    after, second = steps["original after the copy"], steps["second copy"]
    assert after["shot"] == widened["shot"] and after["status"].startswith("Done: 0 frames computed, 6 cached")
    assert second["uuid"] not in (original["uuid"], copy["uuid"]) and second["shot"] != after["shot"]
    assert r["owners"] == ["Scene", "Scene.001", "Scene.002"]
    # an alpha folder that cannot be made: the reason, no traceback, nothing running
    result, message, status, running = r["bad_folder"]
    assert result == ["RAISED"] and "cannot make the alpha folder" in message and "Not a directory" in message
    assert status.startswith("Error: cannot make the alpha folder") and not running, r["bad_folder"]


@pytest.fixture(scope="module")
def stuck_server(tmp_path_factory):
    """A server whose every frame takes 8 s: a cancel lands only after the frame in progress."""
    with ServerProcess(tmp_path_factory.mktemp("stuck") / "cache", delay=8.0) as proc:
        yield proc


def test_quitting_mid_run_cancels_it_and_blender_exits(blender, addons, plates, stuck_server, tmp_path):
    r = play(blender, "quit_mid_run", tmp_path, addons=str(addons), plates=str(plates),
             address=stuck_server.address)
    exited = time.time()
    assert r["track"] == [["FINISHED"], ""] and r["status_at_quit"].startswith("tracking"), r
    # Blender waits QUIT_WAIT_S for the worker, then ends its socket, instead of hanging on exit
    assert exited - r["quit_at"] < 15, exited - r["quit_at"]
    with stuck_server.client() as client:
        jobs = client.status()["jobs"]
        deadline = time.monotonic() + 20
        while jobs and time.monotonic() < deadline:  # the frame in progress finishes, then the job stops
            time.sleep(0.2)
            jobs = client.status()["jobs"]
    assert jobs == []


def _server_lifetime(blender: Path, addons: Path, plates: Path, tmp_path: Path, crash: bool) -> None:
    command, _ = server_command(tmp_path)
    r = play(blender, "server_lifetime", tmp_path, addons=str(addons), plates=str(plates), address="",
             own_address=f"tcp://127.0.0.1:{free_port()}", crash=crash, env={"MAM2_SERVER_COMMAND": str(command)})
    pids = r["pids"]
    assert r["state_before"] == "Not started here"
    assert r["track"][0] == ["FINISHED"] and r["track"][2].startswith("Done: 6 frames computed"), r["track"]
    assert r["state"] == f"Started here (pid {pids['first']}, default engine)"
    assert r["check"][1].startswith("Started here: mam2 0.1.0, engine testfast on cpu"), r["check"]
    assert r["restart"][1].startswith("Restarted") and r["restart_args"] == ["--engine", "classic"], r["restart"]
    assert pids["restarted"] != pids["first"] and not alive(pids["first"])
    assert r["stop"][1] == "Stopped" and r["stop"][2] == "Stopped" and r["stopped_exit_code"] is not None
    assert not alive(pids["restarted"])
    assert r["track_again"][2].startswith("Done"), r["track_again"]
    assert r["after_disable"][0] is not None and r["after_disable"][1] and not alive(pids["again"])
    assert r["track_last"][2].startswith("Done"), r["track_last"]
    assert gone_within(pids["last"], 15), f"server {pids['last']} outlived Blender ({'crash' if crash else 'quit'})"


def test_a_server_the_addon_starts_goes_when_blender_quits(blender, addons, plates, tmp_path):
    _server_lifetime(blender, addons, plates, tmp_path, crash=False)


def test_a_server_the_addon_starts_goes_when_blender_crashes(addons, plates, tmp_path):
    _server_lifetime(bpy_python("5.0"), addons, plates, tmp_path, crash=True)
