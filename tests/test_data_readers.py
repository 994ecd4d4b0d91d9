"""Dataset readers on tiny fixtures written in each dataset's published layout; clear errors for wrong ones."""
import json
import re
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import dataset_layouts as L
from mam2_server.data import DatasetLayoutError, open_dataset
from mam2_server.data.base import Backgrounds, pick_frames
from mam2_server.data.files import VideoFile

RNG = np.random.default_rng


def _read(reader, frames=1, seed=0):
    raw = reader.read(0, frames, RNG(seed))
    assert raw is not None
    return raw


def test_image_seg_duts_and_dis5k_use_the_training_split(tmp_path):
    duts = open_dataset("image_seg", L.write_duts(tmp_path / "DUTS", n=3))
    assert duts.layout.startswith("DUTS") and len(duts) == 3  # DUTS-TE left out
    assert all("DUTS-TR" in str(img) for img, _ in duts.pairs)
    raw = _read(duts)
    assert raw.kind == "image_seg" and raw.frames[0].shape == (L.H, L.W, 3) and raw.frames[0].dtype == np.uint8
    assert set(np.unique(raw.targets[0])) == {0.0, 1.0}
    dis = open_dataset("image_seg", L.write_dis5k(tmp_path / "DIS5K"))
    assert dis.layout.startswith("DIS5K") and len(dis) == 2 and all("DIS-TR" in str(i) for i, _ in dis.pairs)
    # pointing at the split itself works too
    assert len(open_dataset("image_seg", tmp_path / "DUTS" / "DUTS-TE")) == 3


@pytest.mark.parametrize("writer,layout,count,composite", [
    (lambda p: L.write_fg_alpha(p, "fg", "alpha"), "fg / alpha", 2, True),  # Composition-1k, Transparent-460
    (lambda p: L.write_fg_alpha(p, "FG", "GT"), "FG / GT", 2, True),  # Distinctions-646
    (L.write_am2k, "original / mask", 2, False),
    (L.write_p3m, "blurred_image / mask", 2, False),
    (L.write_ihim, "I-HIM50K", 4, False),  # one item per instance matte
])
def test_image_matting_layouts(tmp_path, writer, layout, count, composite):
    reader = open_dataset("image_matting", writer(tmp_path / "set"))
    assert layout in reader.layout and len(reader) == count
    raw = _read(reader)
    assert raw.soft and (raw.fgs is not None) == composite and (raw.frames is None) == composite
    a = raw.targets[0]
    assert a.shape == (L.H, L.W) and 0 < a.mean() < 1 and ((a > 0) & (a < 1)).any()  # a soft matte


def test_video_seg_palette_and_youtube_vis(tmp_path):
    vos = open_dataset("video_seg", L.write_youtube_vos(tmp_path / "YTVOS"))
    assert "Annotations" in vos.layout and len(vos) == 2
    objects = set()
    for seed in range(12):
        raw = vos.read(0, 3, RNG(seed))
        assert len(raw.frames) == len(raw.targets) == 3 and set(np.unique(raw.targets[0])) <= {0.0, 1.0}
        objects.add(int(raw.targets[0][10, 10]))  # object 2 covers (10, 10), object 1 does not
    assert objects == {0, 1}  # both object ids get picked
    davis = tmp_path / "DAVIS"  # JPEGImages/{480p,Full-Resolution}/<video>: 480p is used
    for res in ("480p", "Full-Resolution"):
        for sub in ("JPEGImages", "Annotations"):
            shutil.copytree(tmp_path / "YTVOS" / "train" / sub, davis / sub / res)
    reader = open_dataset("video_seg", davis)
    assert len(reader) == 2 and all("480p" in str(v[0][0]) for v in reader.videos)
    vis = open_dataset("video_seg", L.write_youtube_vis(tmp_path / "YTVIS"))
    assert vis.layout.startswith("YouTube-VIS") and len(vis) == 1
    for seed in range(6):
        raw = _read(vis, 2, seed)
        t0 = int(raw.source[-9:-4])  # starts on an annotated frame (frame 2's segmentation is null)
        assert t0 != 2 and np.array_equal(raw.targets[0] > 0.5, L.ellipse_alpha(t0) > 0.5)  # COCO column-major RLE


def test_video_seg_release_layouts_ytvis_2019_davis_splits_ytvos_all_frames(tmp_path):
    # YouTube-VIS 2019: ytvis_2019/train.json beside train/ (2021 keeps train/instances.json inside it)
    vis = L.write_youtube_vis(tmp_path / "ytvis_2019")
    (vis / "train" / "instances.json").rename(vis / "train.json")
    L._write(vis / "valid" / "JPEGImages" / "vidv" / "00000.jpg", L.photo(0, 1)[0])  # valid.json: not used
    (vis / "valid.json").write_text(json.dumps({"videos": [], "annotations": []}))
    for root in (vis, vis / "train"):
        reader = open_dataset("video_seg", root)
        assert reader.layout == "YouTube-VIS (JPEGImages + train.json)" and len(reader) == 1
        assert reader.annotations == vis / "train.json" and _read(reader, 2).targets[0].any()

    # DAVIS: train and val videos share JPEGImages/480p; ImageSets/<year>/train.txt has the split
    davis = tmp_path / "DAVIS"
    L.write_youtube_vos(tmp_path / "frames", videos=3)
    names = sorted(p.name for p in (tmp_path / "frames" / "train" / "JPEGImages").iterdir())
    for sub in ("JPEGImages", "Annotations"):
        shutil.copytree(tmp_path / "frames" / "train" / sub, davis / sub / "480p")
    for year, train, val in (("2016", names[:1], names[2:]), ("2017", names[:2], names[2:])):
        (davis / "ImageSets" / year).mkdir(parents=True)
        (davis / "ImageSets" / year / "train.txt").write_text("".join(n + "\n" for n in train))
        (davis / "ImageSets" / year / "val.txt").write_text("".join(n + "\n" for n in val))
    reader = open_dataset("video_seg", davis)
    assert sorted(v[0][0].parent.name for v in reader.videos) == names[:2]  # 2017's train, val left out
    (davis / "ImageSets" / "2017" / "train.txt").write_text("bmx-trees\n")
    with pytest.raises(DatasetLayoutError, match=r"train.txt: video\(s\) bmx-trees have no annotations"):
        open_dataset("video_seg", davis)

    # YouTube-VOS: train_all_frames/JPEGImages (every frame, no Annotations) is left out, not an error
    vos = L.write_youtube_vos(tmp_path / "YouTubeVOS")
    shutil.copytree(vos / "train" / "JPEGImages", vos / "train_all_frames" / "JPEGImages")
    reader = open_dataset("video_seg", vos)
    assert len(reader) == 2 and all("train_all_frames" not in str(v[0][0]) for v in reader.videos)
    with pytest.raises(DatasetLayoutError, match="frames without annotations.*holding train/"):
        open_dataset("video_seg", vos / "train_all_frames")
    shutil.copytree(vos / "train" / "JPEGImages", vos / "train_extra" / "JPEGImages")  # any other: still an error
    with pytest.raises(DatasetLayoutError, match="train_extra/JPEGImages: next to it there is neither"):
        open_dataset("video_seg", vos)


def test_video_matting_vm108_three_levels_down(tmp_path):
    L.write_vm108(tmp_path / "sets" / "matting" / "VideoMatting108")  # FG_done three levels below the root
    assert open_dataset("video_matting", tmp_path / "sets").layout.startswith("VideoMatting108")


def test_video_matting_videomatte_frames_videos_and_vm108(tmp_path):
    vm = open_dataset("video_matting", L.write_videomatte(tmp_path / "VM240K"))
    assert "fgr/<clip>/<frame>" in vm.layout and len(vm) == 2 and vm.needs_backgrounds
    assert all("train" in str(f[0]) for f, _ in vm.clips)  # test/ left out
    raw = _read(vm, 4)
    assert raw.fgs is not None and len(raw.targets) == 4
    # the original release: fgr/<clip>.mp4 + pha/<clip>.mp4
    for name in ("fgr", "pha"):
        (tmp_path / "mp4" / name).mkdir(parents=True)
        writer = cv2.VideoWriter(str(tmp_path / "mp4" / name / "0000.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25,
                                 (L.W, L.H))
        for t in range(6):
            writer.write(np.full((L.H, L.W, 3), 40 * t, np.uint8))
        writer.release()
    mp4 = open_dataset("video_matting", tmp_path / "mp4")
    assert ".mp4" in mp4.layout and len(mp4) == 1
    frames = VideoFile(tmp_path / "mp4" / "fgr" / "0000.mp4").read([4, 1])
    assert abs(int(frames[0][0, 0, 0]) - 160) < 12 and abs(int(frames[1][0, 0, 0]) - 40) < 12
    vm108 = open_dataset("video_matting", L.write_vm108(tmp_path / "VM108"))
    assert vm108.layout.startswith("VideoMatting108") and len(vm108) == 1  # train_videos.txt: clip_a only
    raw = _read(vm108, 3)
    assert raw.backgrounds is not None and len(raw.backgrounds) == 3 and "clip_a" in raw.source


def test_wrong_and_incomplete_layouts_name_the_folder_or_file(tmp_path):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    for kind in ("image_seg", "image_matting", "video_seg", "video_matting"):
        with pytest.raises(DatasetLayoutError, match=str(empty)):
            open_dataset(kind, empty)
    with pytest.raises(DatasetLayoutError, match="not a folder"):
        open_dataset("image_seg", tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown data kind"):
        open_dataset("depth", empty)
    duts = L.write_duts(tmp_path / "DUTS", n=3)
    (duts / "DUTS-TR" / "DUTS-TR-Mask" / "ILSVRC_00001.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"1 of 3 images have no mask.*ILSVRC_00001"):
        open_dataset("image_seg", duts / "DUTS-TR")
    vos = L.write_youtube_vos(tmp_path / "VOS")
    ann = next((vos / "train" / "Annotations").iterdir())
    png = next(ann.iterdir())
    cv2.imwrite(str(png), np.zeros((L.H, L.W, 3), np.uint8))  # an RGB PNG is not an id map
    reader = open_dataset("video_seg", vos)
    index = next(i for i, v in enumerate(reader.videos) if v[0][1].parent == ann)
    with pytest.raises(DatasetLayoutError, match=f"{png.name}: annotation is a RGB image.*palette"):
        reader.read(index, 5, RNG(0))  # 5 of 5 frames: every annotation is read
    vis = L.write_youtube_vis(tmp_path / "VIS")
    (vis / "train" / "instances.json").write_text(json.dumps({"videos": []}))
    with pytest.raises(DatasetLayoutError, match="instances.json"):
        open_dataset("video_seg", vis)
    vm = L.write_videomatte(tmp_path / "VM")
    next((vm / "train" / "pha" / "0001").iterdir()).unlink()
    with pytest.raises(DatasetLayoutError, match="0001.*without alpha"):
        open_dataset("video_matting", vm)
    with pytest.raises(DatasetLayoutError, match="no images"):
        Backgrounds(empty)
    broken = L.write_fg_alpha(tmp_path / "broken")
    (broken / "fg" / "obj_0.png").write_bytes(b"not a png")
    with pytest.raises(DatasetLayoutError, match="obj_0.png: not a readable image"):
        open_dataset("image_matting", broken).read(0, 1, RNG(0))


def test_pick_frames():
    rng = RNG(0)
    for _ in range(50):
        picks = pick_frames(20, 4, rng)
        assert len(picks) == 4 and picks == sorted(picks) and 0 <= picks[0] and picks[-1] < 20
        steps = np.diff(picks)
        assert len(set(steps)) == 1 and 1 <= steps[0] <= 3
    assert pick_frames(2, 4, rng) in ([0, 1, 1, 1], [1, 1, 1, 1])  # a short clip repeats its last frame
    assert pick_frames(10, 3, rng, starts=[7])[0] == 7


def test_youtube_vis_without_pycocotools_names_the_train_extra(tmp_path, monkeypatch):
    vis = L.write_youtube_vis(tmp_path / "VIS")
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import pycocotools -> ImportError
    with pytest.raises(RuntimeError, match=r"instances.json: YouTube-VIS masks .*pycocotools.*'train' extra"):
        open_dataset("video_seg", vis)
    open_dataset("video_seg", L.write_youtube_vos(tmp_path / "VOS"))  # palette masks need nothing extra


def _names(requirements):
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_pycocotools_is_an_extra_not_a_core_dependency():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "pycocotools" not in _names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert "pycocotools" in _names(extras["train"]) and "pycocotools" in _names(extras["dev"])
