"""Tiny datasets written in the real datasets' published layouts (tests of the readers, training and eval).

Each writer makes a few small frames with one soft-edged object (an ellipse whose alpha ramps
over a few pixels) on a textured background, in the file formats the datasets ship.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

W, H = 96, 72


def ellipse_alpha(t: int = 0, w: int = W, h: int = H, soft: float = 4.0) -> np.ndarray:
    """(h, w) float32 alpha: an ellipse moving right with t, edges ramping over `soft` px."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w * 0.42 + 3 * t, h * 0.5
    r = np.sqrt(((xx - cx) / (w * 0.22)) ** 2 + ((yy - cy) / (h * 0.3)) ** 2)
    return np.clip((1.0 - r) * (w * 0.22) / soft + 0.5, 0.0, 1.0)


def texture(seed: int, w: int = W, h: int = H) -> np.ndarray:
    """(h, w, 3) uint8 RGB: smooth random colours (JPEG-friendly)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _write(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb)
    return path


def _grey(path: Path, a: np.ndarray) -> Path:
    return _write(path, np.round(np.clip(a, 0, 1) * 255).astype(np.uint8))


def photo(t: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, alpha): a red-ish object composited (8-bit sRGB, as a camera would give) over a texture."""
    a = ellipse_alpha(t)
    fg = np.zeros((H, W, 3), np.float32) + np.array([220, 60, 40], np.float32)
    img = a[..., None] * fg + (1 - a[..., None]) * texture(seed)
    return np.round(img).astype(np.uint8), a


def write_duts(root: Path, n: int = 3) -> Path:
    for split in ("DUTS-TR", "DUTS-TE"):
        for i in range(n):
            img, a = photo(i, i)
            _write(root / split / f"{split}-Image" / f"ILSVRC_{i:05d}.jpg", img)
            _grey(root / split / f"{split}-Mask" / f"ILSVRC_{i:05d}.png", (a > 0.5).astype(np.float32))
    return root


def write_dis5k(root: Path, n: int = 2) -> Path:
    for split in ("DIS-TR", "DIS-VD"):
        for i in range(n):
            img, a = photo(i, 10 + i)
            _write(root / split / "im" / f"{i}#Animal#{i}.jpg", img)
            _grey(root / split / "gt" / f"{i}#Animal#{i}.png", (a > 0.5).astype(np.float32))
    return root


def write_fg_alpha(root: Path, fg: str = "fg", alpha: str = "alpha", n: int = 2) -> Path:
    """Composition-1k / Transparent-460 (fg/ + alpha/) or Distinctions-646 (FG/ + GT/)."""
    for i in range(n):
        a = ellipse_alpha(i)
        colour = np.zeros((H, W, 3), np.uint8) + np.array([30, 200, 90], np.uint8)
        _write(root / fg / f"obj_{i}.png", colour)
        _grey(root / alpha / f"obj_{i}.png", a)
    return root


def write_am2k(root: Path, n: int = 2) -> Path:
    for split in ("train", "validation"):
        for i in range(n):
            img, a = photo(i, 20 + i)
            _write(root / split / "original" / f"m_{i:08x}.jpg", img)
            _grey(root / split / "mask" / f"m_{i:08x}.png", a)
    return root


def write_p3m(root: Path, n: int = 2) -> Path:
    for i in range(n):
        img, a = photo(i, 30 + i)
        _write(root / "train" / "blurred_image" / f"p_{i}.jpg", img)
        _grey(root / "train" / "mask" / f"p_{i}.png", a)
    return root


def write_ihim(root: Path, n: int = 2) -> Path:
    for i in range(n):
        img, a = photo(i, 40 + i)
        _write(root / "train" / "images" / f"him_{i}.jpg", img)
        _grey(root / "train" / "alphas" / f"him_{i}" / "00.png", a)
        _grey(root / "train" / "alphas" / f"him_{i}" / "01.png", ellipse_alpha(i + 5) * 0.9)
    return root


def _palette_png(path: Path, ids: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    im.save(path)
    return path


def write_youtube_vos(root: Path, videos: int = 2, frames: int = 5, step: int = 5) -> Path:
    """train/JPEGImages/<video>/<frame>.jpg + train/Annotations/<video>/<frame>.png, two objects (ids 1, 2)."""
    for v in range(videos):
        name = f"{v:03d}a1b2c3"
        for t in range(frames):
            img, a = photo(t, 50 + v)
            ids = np.zeros((H, W), np.uint8)
            ids[a > 0.5] = 1
            ids[5:15, 5:20] = 2
            _write(root / "train" / "JPEGImages" / name / f"{t * step:05d}.jpg", img)
            _palette_png(root / "train" / "Annotations" / name / f"{t * step:05d}.png", ids)
    return root


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major counts starting with zeros), as YouTube-VIS stores masks."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for px in flat:
        if px != value:
            counts.append(run)
            value, run = px, 0
        run += 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def write_youtube_vis(root: Path, frames: int = 4) -> Path:
    names, segs = [], []
    for t in range(frames):
        img, a = photo(t, 60)
        names.append(f"vid0/{t:05d}.jpg")
        _write(root / "train" / "JPEGImages" / names[-1], img)
        segs.append(_rle(a > 0.5) if t != 2 else None)
    data = {"videos": [{"id": 1, "file_names": names, "height": H, "width": W, "length": frames}],
            "annotations": [{"id": 1, "video_id": 1, "category_id": 26, "segmentations": segs, "iscrowd": 0}],
            "categories": [{"id": 26, "name": "person"}]}
    (root / "train" / "instances.json").write_text(json.dumps(data))
    return root


def write_videomatte(root: Path, clips: int = 2, frames: int = 5) -> Path:
    """VideoMatte240K_JPEG_SD layout: train/fgr/<clip>/<frame>.jpg + train/pha/<clip>/<frame>.jpg."""
    for split in ("train", "test"):
        for c in range(clips):
            for t in range(frames):
                fg = np.zeros((H, W, 3), np.uint8) + np.array([200, 170, 140], np.uint8)
                _write(root / split / "fgr" / f"{c:04d}" / f"{t:05d}.jpg", fg)
                _grey(root / split / "pha" / f"{c:04d}" / f"{t:05d}.jpg", ellipse_alpha(t))
    return root


def write_vm108(root: Path, frames: int = 4) -> Path:
    corr = {}
    for clip in ("clip_a", "clip_b"):
        for t in range(frames):
            a = ellipse_alpha(t)
            rgba = np.dstack([np.zeros((H, W, 3), np.uint8) + np.array([90, 90, 250], np.uint8),
                              np.round(a * 255).astype(np.uint8)])
            key = f"{clip}/{t:05d}.png"
            path = root / "FG_done" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
            _write(root / "BG_done" / f"bg_{clip}" / f"{t:05d}.jpg", texture(70 + t))
            corr[key] = f"bg_{clip}/{t:05d}.jpg"
    (root / "frame_corr.json").write_text(json.dumps(corr))
    (root / "train_videos.txt").write_text("clip_a\n")
    (root / "val_videos.txt").write_text("clip_b\n")
    return root


def write_backgrounds(root: Path, n: int = 3) -> Path:
    for i in range(n):
        _write(root / "train" / f"h_{i:08x}.jpg", texture(100 + i, 128, 96))
    return root


def write_benchmark_clip(clip: Path, frames: int = 4, input_dir: str = "com", seed: int = 0) -> Path:
    """One benchmark clip: <clip>/<input_dir>/<t>.png + <clip>/pha/<t>.png (RVM / YouTubeMatte layouts)."""
    for t in range(frames):
        img, a = photo(t, seed)
        _write(clip / input_dir / f"{t:04d}.png", img)
        _grey(clip / "pha" / f"{t:04d}.png", a)
    return clip


def write_all_kinds(root: Path) -> dict[str, Path]:
    """One small dataset of each of the four kinds + backgrounds (the end-to-end training test)."""
    return {"image_seg": write_duts(root / "DUTS"), "image_matting": write_fg_alpha(root / "D646" / "Train", "FG", "GT"),
            "video_seg": write_youtube_vos(root / "YTVOS"),
            "video_matting": write_videomatte(root / "VideoMatte240K_JPEG_SD"),
            "backgrounds": write_backgrounds(root / "BG-20k")}
