"""Image datasets: segmentation (DUTS, DIS5K) and matting (Composition-1k, Distinctions-646,
Transparent-460, AM-2K, P3M-10k, I-HIM50K), in the layouts their authors distribute.

Layouts (checked in each dataset's official repository or README; docs/training.md cites them):

* image_seg: DUTS ``DUTS-TR/DUTS-TR-Image/<name>.jpg`` + ``DUTS-TR/DUTS-TR-Mask/<name>.png``;
  DIS5K ``DIS5K/DIS-TR/im/<name>.jpg`` + ``DIS5K/DIS-TR/gt/<name>.png``.
* image_matting, foreground + alpha (composited over ``--backgrounds``): Composition-1k and
  Transparent-460 ``fg/`` + ``alpha/``, Distinctions-646 ``FG/`` + ``GT/``, AM-2K ``fg/`` +
  ``mask/`` (when its closed-form foregrounds were generated);
* image_matting, photograph + alpha (used as they are): AM-2K ``original/`` + ``mask/``, P3M-10k
  ``blurred_image/`` (or ``original_image/``) + ``mask/``, RWP-636 ``image/`` + ``alpha/``,
  I-HIM50K ``images/<name>.jpg`` + ``alphas/<name>/<k>.png`` (one item per instance matte).

A folder given on the command line may be the pair's parent or any folder up to three levels
above it. When it holds several splits, the training splits are used (``train`` / ``-TR`` in a
folder name); if none is marked as such, all are.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from mam2_server.data.base import RawSample
from mam2_server.data.files import (
    DatasetLayoutError,
    find_dirs,
    list_images,
    read_alpha,
    read_rgb,
    seen_dirs,
    walk_dirs,
)

__all__ = ["ImageSegReader", "ImageMattingReader", "open_image_seg", "open_image_matting", "train_splits"]

log = logging.getLogger(__name__)


_TRAIN = re.compile(r"train|(^|[-_])tr($|[-_])", re.IGNORECASE)


def train_splits(dirs: list[Path], root: Path) -> list[Path]:
    """The training splits among `dirs` (a folder below `root` named *train* or *-TR*); all if none is."""
    marked = [d for d in dirs if any(_TRAIN.search(p) for p in d.relative_to(root).parts)]
    if marked and len(marked) < len(dirs):
        log.info("%s: using the training split(s) %s", root, ", ".join(str(d.relative_to(root)) for d in marked))
    return marked or dirs


def _pairs(images: Path, targets: Path, what: str) -> list[tuple[Path, Path]]:
    """(image, target) files matched by name stem; an image without its target is an error."""
    imgs, tgts = list_images(images), {p.stem: p for p in list_images(targets)}
    if not imgs:
        raise DatasetLayoutError(f"{images}: no images in the folder")
    missing = [p.name for p in imgs if p.stem not in tgts]
    if missing:
        raise DatasetLayoutError(f"{images}: {len(missing)} of {len(imgs)} images have no {what} of the same name "
                                 f"in {targets} (e.g. {missing[0]}): incomplete dataset?")
    return [(p, tgts[p.stem]) for p in imgs]


class ImageSegReader:
    """Images with binary object masks (mask > 0.5 is the object)."""

    kind = "image_seg"

    def __init__(self, root: Path, pairs: list[tuple[Path, Path]], layout: str) -> None:
        self.root, self.pairs, self.layout = root, pairs, layout

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int, num_frames: int, rng: np.random.Generator) -> RawSample | None:
        image, mask = self.pairs[index]
        m = (read_alpha(mask) > 0.5).astype(np.float32)
        frame = read_rgb(image)
        if frame.shape[:2] != m.shape:
            raise DatasetLayoutError(f"{mask}: {m.shape[1]}x{m.shape[0]} but its image {image} is "
                                     f"{frame.shape[1]}x{frame.shape[0]}")
        return RawSample(self.kind, [m], frames=[frame], source=str(image)) if m.any() else None


def open_image_seg(root: str | Path) -> ImageSegReader:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"image_seg {root}: not a folder")
    found: list[tuple[Path, Path]] = []
    layouts = set()
    for d in walk_dirs(root, 3):
        name = d.name
        if name.lower().endswith("-image") and (d.parent / (name[:-6] + "-Mask")).is_dir():
            found.append((d, d.parent / (name[:-6] + "-Mask")))  # DUTS-TR-Image / DUTS-TR-Mask
            layouts.add("DUTS (*-Image / *-Mask)")
        elif name == "im" and (d.parent / "gt").is_dir():
            found.append((d, d.parent / "gt"))  # DIS5K DIS-TR/im, DIS-TR/gt
            layouts.add("DIS5K (im / gt)")
    if not found:
        raise DatasetLayoutError(
            f"image_seg {root}: no image/mask folder pair found at or up to 3 levels below it; expected DUTS's "
            "DUTS-TR/DUTS-TR-Image/<name>.jpg + DUTS-TR/DUTS-TR-Mask/<name>.png or DIS5K's DIS-TR/im/<name>.jpg + "
            f"DIS-TR/gt/<name>.png; folders seen: {seen_dirs(root)}")
    parents = train_splits([img.parent for img, _ in found], root)
    pairs = [p for img, msk in found if img.parent in parents for p in _pairs(img, msk, "mask")]
    return ImageSegReader(root, pairs, " + ".join(sorted(layouts)))


# alpha folder -> the colour folders that go with it: (name, composited over a background?)
_MATTING_PAIRS = {
    "alpha": (("fg", True), ("image", False)),  # Composition-1k / Transparent-460; RWP-636
    "gt": (("fg", True),),  # Distinctions-646 FG / GT
    "mask": (("fg", True), ("original", False), ("blurred_image", False), ("original_image", False)),  # AM-2K, P3M
}


class ImageMattingReader:
    """(colour file, alpha file, composite?) items: a foreground composited later, or a photograph."""

    kind = "image_matting"

    def __init__(self, root: Path, items: list[tuple[Path, Path, bool]], layout: str) -> None:
        self.root, self.items, self.layout = root, items, layout

    @property
    def needs_backgrounds(self) -> bool:
        return any(comp for _, _, comp in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def read(self, index: int, num_frames: int, rng: np.random.Generator) -> RawSample | None:
        colour, alpha_path, composite = self.items[index]
        alpha, rgb = read_alpha(alpha_path), read_rgb(colour)
        if rgb.shape[:2] != alpha.shape:
            raise DatasetLayoutError(f"{alpha_path}: {alpha.shape[1]}x{alpha.shape[0]} but {colour} is "
                                     f"{rgb.shape[1]}x{rgb.shape[0]}")
        if not (alpha > 0.01).any():
            return None
        if composite:
            return RawSample(self.kind, [alpha], fgs=[rgb], source=str(colour))
        return RawSample(self.kind, [alpha], frames=[rgb], source=str(colour))


def open_image_matting(root: str | Path) -> ImageMattingReader:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"image_matting {root}: not a folder")
    groups: list[tuple[Path, list[tuple[Path, Path, bool]], str]] = []
    for d in find_dirs(root, [*_MATTING_PAIRS, "alphas"], depth=3):
        if d.name.lower() == "alphas":  # I-HIM50K: images/<name>.jpg + alphas/<name>/<k>.png
            images = _sibling(d, "images")
            if images is not None:
                groups.append((d.parent, _instance_items(images, d), "I-HIM50K (images / alphas/<name>/<k>.png)"))
            continue
        for colour_name, composite in _MATTING_PAIRS[d.name.lower()]:
            colour = _sibling(d, colour_name)
            if colour is not None:
                items = [(c, a, composite) for c, a in _pairs(colour, d, "alpha")]
                groups.append((d.parent, items, f"{colour.name} / {d.name}"))
                break  # fg wins over a photograph of the same alphas (AM-2K with generated fg)
    if not groups:
        raise DatasetLayoutError(
            f"image_matting {root}: no colour/alpha folder pair found at or up to 3 levels below it; expected "
            "fg/ + alpha/ (Composition-1k, Transparent-460), FG/ + GT/ (Distinctions-646), original/ or fg/ + mask/ "
            "(AM-2K), blurred_image/ + mask/ (P3M-10k), image/ + alpha/, or images/ + alphas/<name>/<k>.png "
            f"(I-HIM50K); folders seen: {seen_dirs(root)}")
    parents = train_splits([g[0] for g in groups], root)
    chosen = [g for g in groups if g[0] in parents]
    items = [it for g in chosen for it in g[1]]
    return ImageMattingReader(root, items, " + ".join(sorted({g[2] for g in chosen})))


def _instance_items(images: Path, alphas: Path) -> list[tuple[Path, Path, bool]]:
    items = []
    for image in list_images(images):
        folder = alphas / image.stem
        mattes = list_images(folder) if folder.is_dir() else []
        if not mattes:
            raise DatasetLayoutError(f"{image}: no instance mattes in {folder}/ (I-HIM50K layout "
                                     "alphas/<name>/<k>.png): incomplete dataset?")
        items.extend((image, m, False) for m in mattes)
    if not items:
        raise DatasetLayoutError(f"{images}: no images in the folder")
    return items


def _sibling(d: Path, name: str) -> Path | None:
    for p in d.parent.iterdir():
        if p.is_dir() and p.name.lower() == name:
            return p
    return None
