"""Video datasets: segmentation (YouTube-VOS, MOSE, DAVIS, YouTube-VIS) and matting (VideoMatte240K,
VideoMatting108), in the layouts their authors distribute.

Layouts (checked in each dataset's official repository or README; docs/training.md cites them):

* video_seg, palette masks: ``JPEGImages/<video>/<frame>.jpg`` + ``Annotations/<video>/<frame>.png``,
  each PNG a palette image whose pixel values are object ids (0 = background). YouTube-VOS and
  MOSE (``train/``), DAVIS (``JPEGImages/480p/<video>``, its training videos listed in
  ``ImageSets/<year>/train.txt``: the newest year's is used). Only frames that have an annotation
  are used (YouTube-VOS annotates every 5th frame; its ``train_all_frames/`` has no annotations
  and is left out).
* video_seg, YouTube-VIS: ``JPEGImages/<video>/<frame>.jpg`` + ``instances.json`` beside it (2021:
  ``train/instances.json``) or ``<split>.json`` beside the split (2019: ``train.json`` next to
  ``train/JPEGImages``): COCO-style ``videos`` (``file_names``) and ``annotations`` with one RLE
  segmentation (or null) per frame, decoded with pycocotools (the ``train`` extra).
* video_matting, VideoMatte240K: ``fgr/<clip>/<frame>.jpg`` + ``pha/<clip>/<frame>.jpg`` (the
  JPEG_SD / JPEG_HD releases, under ``train/``) or the original ``fgr/<clip>.mp4`` + ``pha/<clip>.mp4``;
  composited over ``--backgrounds``.
* video_matting, VideoMatting108: ``FG_done/<clip>/<frame>.png`` (RGBA: foreground + alpha),
  ``BG_done/...`` with ``frame_corr.json`` naming each frame's background, and ``train_videos.txt``.

A sample is one object through `num_frames` frames picked with a random start and stride.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np

from mam2_server.data.base import RawSample, pick_frames
from mam2_server.data.files import (
    VIDEO_EXTS,
    DatasetLayoutError,
    VideoFile,
    find_dirs,
    list_images,
    read_alpha,
    read_palette,
    read_rgb,
    read_rgba,
    seen_dirs,
)
from mam2_server.data.image_sets import train_splits

log = logging.getLogger(__name__)

__all__ = ["PaletteVideoSegReader", "YouTubeVISReader", "VideoMatteReader", "VM108Reader", "open_video_seg",
           "open_video_matting"]


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_size(path, a: np.ndarray, b: np.ndarray, other) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise DatasetLayoutError(f"{path}: {a.shape[1]}x{a.shape[0]} but {other} is {b.shape[1]}x{b.shape[0]}")


class PaletteVideoSegReader:
    """Videos whose annotations are palette PNGs of object ids (YouTube-VOS, MOSE, DAVIS)."""

    kind = "video_seg"

    def __init__(self, root: Path, videos: list[list[tuple[Path, Path]]], layout: str) -> None:
        self.root, self.videos, self.layout = root, videos, layout

    def __len__(self) -> int:
        return len(self.videos)

    def read(self, index: int, num_frames: int, rng: np.random.Generator) -> RawSample | None:
        frames = self.videos[index]
        picks = pick_frames(len(frames), num_frames, rng)
        ids = [read_palette(frames[i][1]) for i in picks]
        objects = np.unique(ids[0])
        objects = objects[objects != 0]
        if objects.size == 0:
            return None
        obj = int(rng.choice(objects))
        images = [read_rgb(frames[i][0]) for i in picks]
        for i, img, m in zip(picks, images, ids):
            _check_size(frames[i][1], m, img, frames[i][0])
        return RawSample(self.kind, [(m == obj).astype(np.float32) for m in ids], frames=images,
                         source=str(frames[picks[0]][0]))


def _coco_mask(annotations: Path):
    """pycocotools' mask module (RLE decoding), which the ``train`` extra installs."""
    try:
        from pycocotools import mask
    except ImportError:
        raise RuntimeError(f"{annotations}: YouTube-VIS masks are COCO RLE, decoded with pycocotools, which is not "
                           "installed: install mam2's 'train' extra (pip install -e '.[train]' in the mam2 checkout, "
                           "or pip install 'pycocotools>=2.0.8')") from None
    return mask


class YouTubeVISReader:
    """YouTube-VIS: JPEGImages + a COCO-style JSON with per-frame RLE masks per instance."""

    kind = "video_seg"
    layout = "YouTube-VIS (JPEGImages + instances.json)"

    def __init__(self, root: Path, images: Path, annotations: Path) -> None:
        self.root, self.images, self.annotations = root, images, annotations
        self.layout = f"YouTube-VIS (JPEGImages + {annotations.name})"
        _coco_mask(annotations)  # fail when the data is opened, not steps into a run
        try:
            data = json.loads(annotations.read_text(encoding="utf-8"))
            videos = {v["id"]: v for v in data["videos"]}
            anns = data["annotations"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetLayoutError(f"{annotations}: not a YouTube-VIS annotation file (needs 'videos' with "
                                     f"'file_names' and 'annotations' with 'segmentations'): {exc}") from None
        self.items = []  # (file names, segmentations) per instance with at least one mask
        for ann in anns:
            video = videos.get(ann.get("video_id"))
            segs = ann.get("segmentations") or []
            if video is None or not any(s is not None for s in segs):
                continue
            if len(segs) != len(video["file_names"]):
                raise DatasetLayoutError(f"{annotations}: annotation {ann.get('id')} has {len(segs)} segmentations "
                                         f"for a video of {len(video['file_names'])} frames")
            self.items.append((video["file_names"], segs, (video["height"], video["width"])))
        if not self.items:
            raise DatasetLayoutError(f"{annotations}: no annotated instances")
        first = images / self.items[0][0][0]
        if not first.is_file():
            raise DatasetLayoutError(f"{first}: missing (file_names in {annotations.name} are relative to {images})")

    def __len__(self) -> int:
        return len(self.items)

    def read(self, index: int, num_frames: int, rng: np.random.Generator) -> RawSample | None:
        mask_utils = _coco_mask(self.annotations)
        names, segs, (h, w) = self.items[index]
        picks = pick_frames(len(names), num_frames, rng, starts=[i for i, s in enumerate(segs) if s is not None])
        masks = []
        for i in picks:
            seg = segs[i]
            if seg is None:
                masks.append(np.zeros((h, w), np.float32))
                continue
            rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg
            with warnings.catch_warnings():  # pycocotools' own numpy-2 copy= deprecation, not ours
                warnings.simplefilter("ignore", DeprecationWarning)
                masks.append(mask_utils.decode(rle).astype(np.float32))
        images = [read_rgb(self.images / names[i]) for i in picks]
        for i, img, m in zip(picks, images, masks):
            _check_size(self.images / names[i], img, m, "its annotation")
        return RawSample(self.kind, masks, frames=images, source=str(self.images / names[picks[0]]))


def open_video_seg(root: str | Path):
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"video_seg {root}: not a folder")
    readers, frames_only = [], []
    for jpeg in train_splits(find_dirs(root, ["JPEGImages"], depth=3), root):
        ann = next((p for p in jpeg.parent.iterdir() if p.is_dir() and p.name == "Annotations"), None)
        if ann is not None:
            readers.append(_palette_reader(root, jpeg, ann))
            continue
        split = jpeg.parent
        for candidate in (split / "instances.json", split / "train.json", split.parent / f"{split.name}.json"):
            if candidate.is_file():
                readers.append(YouTubeVISReader(root, jpeg, candidate))
                break
        else:
            if split.name.lower().endswith("_all_frames"):  # YouTube-VOS: every frame, annotations are in train/
                log.info("%s: frames without annotations (YouTube-VOS %s), left out", jpeg, split.name)
                frames_only.append(jpeg)
                continue
            raise DatasetLayoutError(f"{jpeg}: next to it there is neither Annotations/ (YouTube-VOS / MOSE palette "
                                     f"PNGs) nor instances.json / train.json (YouTube-VIS), and no {split.name}.json "
                                     f"next to {split.name}/ (YouTube-VIS 2019)")
    if not readers and frames_only:
        raise DatasetLayoutError(f"video_seg {root}: only {', '.join(map(str, frames_only))}, frames without "
                                 "annotations (YouTube-VOS *_all_frames); give the folder holding train/ "
                                 "(JPEGImages + Annotations)")
    if not readers:
        raise DatasetLayoutError(
            f"video_seg {root}: no JPEGImages/ folder at or up to 3 levels below it; expected "
            "JPEGImages/<video>/<frame>.jpg + Annotations/<video>/<frame>.png (YouTube-VOS, MOSE) or + instances.json "
            f"(YouTube-VIS); folders seen: {seen_dirs(root)}")
    return readers[0] if len(readers) == 1 else _Concat(root, readers)


def _palette_reader(root: Path, jpeg: Path, ann: Path) -> PaletteVideoSegReader:
    def video_dirs(d: Path) -> dict[str, Path]:
        subs = _subdirs(d)
        if subs and all(not list_images(p) for p in subs) and all(_subdirs(p) for p in subs):
            # DAVIS: JPEGImages/{480p,Full-Resolution}/<video>: one resolution level, 480p preferred
            subs = _subdirs(next((p for p in subs if p.name == "480p"), subs[0]))
        return {p.name: p for p in subs}

    frames_by_video, masks_by_video = video_dirs(jpeg), video_dirs(ann)
    if not masks_by_video:
        raise DatasetLayoutError(f"{ann}: no <video> folders of annotation PNGs")
    lists = sorted(jpeg.parent.glob("ImageSets/*/train.txt"))  # DAVIS: train and val share JPEGImages/480p
    if lists:
        names = [v.strip() for v in lists[-1].read_text(encoding="utf-8").splitlines() if v.strip()]
        missing = [n for n in names if n not in masks_by_video]
        if missing:
            raise DatasetLayoutError(f"{lists[-1]}: video(s) {', '.join(missing[:5])} have no annotations in {ann}")
        log.info("%s: the training videos of %s (%d of %d)", root, lists[-1], len(names), len(masks_by_video))
        masks_by_video = {n: masks_by_video[n] for n in names}
    videos = []
    for name, mask_dir in masks_by_video.items():
        if name not in frames_by_video:
            raise DatasetLayoutError(f"{mask_dir}: annotations for video {name!r}, which has no frames in {jpeg}")
        images = {p.stem: p for p in list_images(frames_by_video[name])}
        pairs = [(images[m.stem], m) for m in list_images(mask_dir) if m.suffix.lower() == ".png"
                 and m.stem in images]
        if not pairs:
            raise DatasetLayoutError(f"{mask_dir}: no annotation PNG matches a frame of {frames_by_video[name]} "
                                     "(names must match: 00000.png <-> 00000.jpg)")
        videos.append(pairs)
    return PaletteVideoSegReader(root, videos, "JPEGImages + Annotations (YouTube-VOS / MOSE / DAVIS palette PNGs)")


class VideoMatteReader:
    """VideoMatte240K: per-clip foreground and alpha, as frame folders or video files."""

    kind = "video_matting"

    def __init__(self, root: Path, clips: list[tuple[object, object]], layout: str) -> None:
        self.root, self.clips, self.layout = root, clips, layout  # (fgr, pha): lists of files or VideoFiles

    needs_backgrounds = True

    def __len__(self) -> int:
        return len(self.clips)

    def read(self, index: int, num_frames: int, rng: np.random.Generator) -> RawSample | None:
        fgr, pha = self.clips[index]
        if isinstance(fgr, VideoFile):
            count = min(fgr.num_frames, pha.num_frames)
            picks = pick_frames(count, num_frames, rng)
            fgs = fgr.read(picks)
            alphas = [f[..., 0].astype(np.float32) / 255.0 for f in pha.read(picks)]
            source = f"{fgr.path} frame {picks[0]}"
        else:
            picks = pick_frames(len(fgr), num_frames, rng)
            fgs = [read_rgb(fgr[i]) for i in picks]
            alphas = [read_alpha(pha[i]) for i in picks]
            source = str(fgr[picks[0]])
        for f, a in zip(fgs, alphas):
            _check_size(source, f, a, "its alpha")
        return RawSample(self.kind, alphas, fgs=fgs, source=source) if (alphas[0] > 0.01).any() else None


def _videomatte(root: Path, split: Path) -> VideoMatteReader:
    fgr, pha = split / "fgr", split / "pha"
    if not pha.is_dir():
        raise DatasetLayoutError(f"{fgr}: no pha/ folder next to it (VideoMatte240K: fgr/ + pha/)")
    clips = []
    videos = sorted(p for p in fgr.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
    if videos:
        for v in videos:
            alpha = pha / v.name
            if not alpha.is_file():
                raise DatasetLayoutError(f"{v}: no alpha video {alpha}")
            clips.append((VideoFile(v), VideoFile(alpha)))
        return VideoMatteReader(root, clips, "VideoMatte240K (fgr/<clip>.mp4 + pha/<clip>.mp4)")
    for clip in _subdirs(fgr):
        frames = list_images(clip)
        alphas = {p.stem: p for p in list_images(pha / clip.name)} if (pha / clip.name).is_dir() else {}
        missing = [f.name for f in frames if f.stem not in alphas]
        if not frames or missing:
            raise DatasetLayoutError(f"{clip}: {'no frames' if not frames else f'{len(missing)} frames'} without "
                                     f"alpha in {pha / clip.name} (e.g. {missing[0] if missing else '-'})")
        clips.append((frames, [alphas[f.stem] for f in frames]))
    if not clips:
        raise DatasetLayoutError(f"{fgr}: no clips (fgr/<clip>/<frame>.jpg or fgr/<clip>.mp4)")
    return VideoMatteReader(root, clips, "VideoMatte240K (fgr/<clip>/<frame> + pha/<clip>/<frame>)")


class VM108Reader:
    """VideoMatting108: RGBA foreground frames with the backgrounds the authors paired them with."""

    kind = "video_matting"
    layout = "VideoMatting108 (FG_done + BG_done + frame_corr.json)"
    needs_backgrounds = False

    def __init__(self, root: Path, data: Path) -> None:
        self.root, self.data = root, data
        try:
            self.corr = json.loads((data / "frame_corr.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetLayoutError(f"{data / 'frame_corr.json'}: unreadable ({exc})") from None
        split = data / "train_videos.txt"
        names = ([v.strip() for v in split.read_text().splitlines() if v.strip()] if split.is_file()
                 else sorted(p.name for p in _subdirs(data / "FG_done")))
        by_clip: dict[str, list[str]] = {}
        for key in sorted(self.corr):
            by_clip.setdefault(str(Path(key).parent), []).append(key)
        missing = [n for n in names if n not in by_clip]
        if missing:
            raise DatasetLayoutError(f"{data}: clip(s) {', '.join(missing[:5])} of {split.name} have no frames in "
                                     "frame_corr.json")
        self.clips = [by_clip[n] for n in names]
        if not self.clips:
            raise DatasetLayoutError(f"{data}: no clips")

    def __len__(self) -> int:
        return len(self.clips)

    def read(self, index: int, num_frames: int, rng: np.random.Generator) -> RawSample | None:
        keys = self.clips[index]
        picks = pick_frames(len(keys), num_frames, rng)
        fgs, alphas, bgs = [], [], []
        for i in picks:
            rgb, alpha = read_rgba(self.data / "FG_done" / keys[i])
            bg_path = self.data / "BG_done" / self.corr[keys[i]]
            if not bg_path.is_file():  # the authors' loader falls back to .png
                bg_path = bg_path.with_suffix(".png")
            bg = read_rgb(bg_path)
            _check_size(bg_path, bg, rgb, self.data / "FG_done" / keys[i])
            fgs.append(rgb), alphas.append(alpha), bgs.append(bg)
        if not (alphas[0] > 0.01).any():
            return None
        return RawSample(self.kind, alphas, fgs=fgs, backgrounds=bgs, source=str(self.data / "FG_done" / keys[picks[0]]))


def open_video_matting(root: str | Path):
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"video_matting {root}: not a folder")
    readers = [VM108Reader(root, d.parent) for d in find_dirs(root, ["FG_done"], depth=3)
               if (d.parent / "frame_corr.json").is_file()]
    splits = train_splits([d.parent for d in find_dirs(root, ["fgr"], depth=3)], root)
    readers += [_videomatte(root, s) for s in splits]
    if not readers:
        raise DatasetLayoutError(
            f"video_matting {root}: no fgr/ + pha/ (VideoMatte240K) or FG_done/ + frame_corr.json (VideoMatting108) "
            f"at or up to 3 levels below it; folders seen: {seen_dirs(root)}")
    return readers[0] if len(readers) == 1 else _Concat(root, readers)


class _Concat:
    """Several readers of one kind found under one folder (e.g. two splits), read as one."""

    def __init__(self, root: Path, readers: list) -> None:
        self.root, self.readers = root, readers
        self.kind = readers[0].kind
        self.layout = " + ".join(sorted({r.layout for r in readers}))
        self.offsets = np.cumsum([0] + [len(r) for r in readers])

    @property
    def needs_backgrounds(self) -> bool:
        return any(getattr(r, "needs_backgrounds", False) for r in self.readers)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, index: int, num_frames: int, rng: np.random.Generator) -> RawSample | None:
        i = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.readers[i].read(index - int(self.offsets[i]), num_frames, rng)
