"""Readers for the public datasets MAM2 trains on, in the layouts their authors distribute.

    reader = open_dataset("video_seg", "/data/MOSE/train")
    raw = reader.read(index, num_frames=4, rng=np.random.default_rng(0))  # a RawSample

Kinds are the paper's four data types (A.3): image_seg, image_matting, video_seg,
video_matting. `open_dataset` recognises the layout from the folder alone and raises
`DatasetLayoutError` (naming the folder or file) for a wrong or incomplete one.
"""
from __future__ import annotations

from pathlib import Path

from mam2_server.data.base import DATA_KINDS, Backgrounds, DatasetReader, RawSample
from mam2_server.data.files import DatasetLayoutError
from mam2_server.data.image_sets import open_image_matting, open_image_seg
from mam2_server.data.video_sets import open_video_matting, open_video_seg

__all__ = ["DATA_KINDS", "Backgrounds", "DatasetLayoutError", "DatasetReader", "RawSample", "open_dataset"]

_OPENERS = {"image_seg": open_image_seg, "image_matting": open_image_matting, "video_seg": open_video_seg,
            "video_matting": open_video_matting}


def open_dataset(kind: str, root: str | Path) -> DatasetReader:
    """The reader for the dataset of `kind` in folder `root`."""
    if kind not in _OPENERS:
        raise ValueError(f"unknown data kind {kind!r}; known: {', '.join(DATA_KINDS)}")
    return _OPENERS[kind](root)
