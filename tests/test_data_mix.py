"""Linear-light compositing, augmentation into TrainSamples, and the paper's four-way sampler (Table 7)."""
import numpy as np
import pytest
import torch

import dataset_layouts as L
from mam2_server.data import Backgrounds, RawSample, open_dataset
from mam2_server.data.files import composite_linear
from mam2_server.io.colour import ColourConverter
from mam2_server.io.srgb import linear_to_srgb, srgb_to_linear
from mam2_server.train.augment import AugmentConfig, make_sample
from mam2_server.train.losses import TRIMAP_BG, TRIMAP_FG, TRIMAP_UNKNOWN
from mam2_server.train.mix import PAPER_MIX, DataSpec, MixedData

NO_JITTER = AugmentConfig(rotate_p=0.0, flip_p=0.0, aspect=0.0, drift=0.0, exposure_stops=0.0, white_balance=0.0,
                          saturation=(1.0, 1.0), grey_p=0.0, crop=(1.0, 1.0))


def test_srgb_curves_match_ocio():
    conv = ColourConverter(colorspace="lin_rec709")
    linear = np.linspace(0, 1, 3 * 64, dtype=np.float32).reshape(8, 8, 3)
    np.testing.assert_allclose(linear_to_srgb(linear), conv.to_display(linear), atol=2e-4)
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, 2)
    np.testing.assert_allclose(srgb_to_linear(codes), conv.from_display(codes / 255.0), atol=2e-4)
    np.testing.assert_allclose(srgb_to_linear(codes / 255.0), srgb_to_linear(codes), atol=1e-6)


def test_composite_is_in_linear_light():
    white, black = np.full((1, 1, 3), 255, np.uint8), np.zeros((1, 1, 3), np.uint8)
    half = composite_linear(white, np.full((1, 1), 0.5), black)
    # half the light of white is sRGB 0.735, not the 0.5 a mix of the encoded values would give
    np.testing.assert_allclose(half, linear_to_srgb(np.full((1, 1, 3), 0.5)), atol=1e-6)
    assert abs(float(half[0, 0, 0]) - 0.7354) < 1e-3
    np.testing.assert_allclose(composite_linear(white, np.ones((1, 1)), black), 1.0, atol=1e-6)


def test_make_sample_composites_foreground_over_background(tmp_path):
    import cv2

    reader = open_dataset("image_matting", L.write_fg_alpha(tmp_path / "c1k"))
    (tmp_path / "bg").mkdir()
    cv2.imwrite(str(tmp_path / "bg" / "grey.png"), np.full((90, 120, 3), 50, np.uint8))  # a flat background
    bgs = Backgrounds(tmp_path / "bg")
    raw = reader.read(0, 1, np.random.default_rng(0))
    sample = make_sample(raw, np.random.default_rng(1), 64, backgrounds=bgs, cfg=NO_JITTER)
    assert sample.kind == "IM" and sample.images.shape == (1, 3, 64, 64) and sample.alpha.shape == (1, 1, 64, 64)
    a, img = sample.alpha[0, 0].numpy(), sample.images[0].permute(1, 2, 0).numpy()
    fg = srgb_to_linear(np.array([30, 200, 90], np.uint8))
    inside = a > 0.999
    assert inside.any() and np.allclose(img[inside], linear_to_srgb(fg), atol=2e-3)  # the foreground's colour
    bg = srgb_to_linear(np.array([50, 50, 50], np.uint8))
    edge = (a > 0.2) & (a < 0.8)
    mixed = linear_to_srgb(a[edge][:, None] * fg + (1 - a[edge][:, None]) * bg)  # alpha-weighted in linear light
    assert edge.sum() > 10 and np.allclose(img[edge], mixed, atol=2e-3)
    assert np.allclose(img[a < 0.001], linear_to_srgb(bg), atol=2e-3)
    assert set(sample.trimap.unique().tolist()) == {TRIMAP_BG, TRIMAP_UNKNOWN, TRIMAP_FG}
    assert sample.mask.dtype == torch.float32 and set(sample.mask.unique().tolist()) == {0.0, 1.0}
    x0, y0, x1, y1 = sample.box.tolist()
    ys, xs = np.nonzero(a > 0.1)
    assert abs(x0 - xs.min()) < 6 and abs(x1 - xs.max() - 1) < 6 and abs(y0 - ys.min()) < 6  # box around it
    with pytest.raises(ValueError, match="--backgrounds"):
        make_sample(raw, np.random.default_rng(1), 64, backgrounds=None, cfg=NO_JITTER)


def test_make_sample_segmentation_and_video_motion():
    frames = [L.photo(t, 0)[0] for t in range(3)]
    masks = [(L.ellipse_alpha(t) > 0.5).astype(np.float32) for t in range(3)]
    raw = RawSample("video_seg", masks, frames=frames)
    sample = make_sample(raw, np.random.default_rng(0), 48)
    assert sample.kind == "VOS" and sample.images.shape == (3, 3, 48, 48) and sample.alpha is None
    assert sample.trimap is None and set(sample.mask.unique().tolist()) <= {0.0, 1.0}
    assert 0.0 <= float(sample.images.min()) and float(sample.images.max()) <= 1.0
    # an object that is not in the crop gives None (the caller draws again)
    empty = RawSample("image_seg", [np.zeros((L.H, L.W), np.float32)], frames=frames[:1])
    assert make_sample(empty, np.random.default_rng(0), 48) is None
    # a sample is a pure function of its generator
    again = make_sample(raw, np.random.default_rng(0), 48)
    assert torch.equal(again.images, sample.images) and torch.equal(again.box, sample.box)


def test_data_spec_defaults_overrides_and_errors():
    spec = DataSpec.from_args(["image_seg=/a,/b", "image_seg=/c", "video_seg=synthetic"],
                              probs=["video_seg=0.5"], batches=["image_seg=2"], frames=["video_seg=6"])
    assert spec.sources == {"image_seg": ["/a", "/b", "/c"], "video_seg": ["synthetic"]}
    assert spec.settings["image_seg"].batch == 2 and spec.settings["video_seg"].prob == 0.5
    assert spec.settings["video_seg"].frames == 6 and spec.settings["video_matting"] == PAPER_MIX["video_matting"]
    assert PAPER_MIX["image_matting"].batch == 4 and PAPER_MIX["video_matting"].frames == 4
    assert all(s.prob == 0.25 for s in PAPER_MIX.values())
    assert set(DataSpec.from_args([]).sources) == set(PAPER_MIX)  # nothing given: synthetic everywhere
    for bad in (["depth=/x"], ["image_seg"], ["image_seg="]):
        with pytest.raises(ValueError, match="KIND"):
            DataSpec.from_args(bad)
    with pytest.raises(ValueError, match="--batch"):
        DataSpec.from_args([], batches=["image_seg=two"])
    with pytest.raises(ValueError, match="batch and frames"):
        DataSpec.from_args([], batches=["image_seg=0"])


def test_four_way_sampler(tmp_path):
    paths = L.write_all_kinds(tmp_path)
    spec = DataSpec.from_args([f"{k}={v}" for k, v in paths.items() if k != "backgrounds"],
                              backgrounds=str(paths["backgrounds"]))
    mix = MixedData(spec, image_size=48, stage=1, seed=3)
    kinds = [mix.kind_of(step, rank) for step in range(2000) for rank in range(2)]
    for kind in PAPER_MIX:
        assert abs(kinds.count(kind) / len(kinds) - 0.25) < 0.03, kind
    assert [mix.kind_of(s, 0) for s in range(40)] != [mix.kind_of(s, 1) for s in range(40)]  # ranks differ
    seen = {}
    for step in range(40):
        kind = mix.kind_of(step)
        if kind not in seen:
            seen[kind] = mix.batch(step)
        if len(seen) == 4:
            break
    expect = {"image_seg": ("IS", 4, 1), "image_matting": ("IM", 4, 1), "video_seg": ("VOS", 1, 4),
              "video_matting": ("VM", 1, 4)}
    for kind, (k, samples) in seen.items():
        code, batch, frames = expect[kind]
        assert k == kind and len(samples) == batch and all(s.kind == code and s.images.shape[0] == frames
                                                            for s in samples)
    step = next(s for s in range(40) if mix.kind_of(s) == "video_matting")
    a, b = mix.batch(step)[1][0], mix.batch(step)[1][0]
    assert torch.equal(a.images, b.images) and torch.equal(a.alpha, b.alpha)  # deterministic per (seed, step, rank)
    # stage 2 trains the matter on image matting only (eq. 2)
    two = MixedData(spec, image_size=48, stage=2, seed=3)
    assert two.kinds == ["image_matting"]
    with pytest.raises(ValueError, match="image_matting"):
        MixedData(DataSpec.from_args([f"video_seg={paths['video_seg']}"]), image_size=48, stage=2)
    with pytest.raises(ValueError, match="--backgrounds"):
        MixedData(DataSpec.from_args([f"video_matting={paths['video_matting']}"]), image_size=48, stage=1)
    with pytest.raises(ValueError, match="not both"):
        MixedData(DataSpec.from_args([f"image_seg={paths['image_seg']},synthetic"]), image_size=48, stage=1)


def test_dataloader_workers_build_the_same_batches():
    from mam2_server.train.distributed import DistContext
    from mam2_server.train.run import _batches

    spec = DataSpec.from_args(["synthetic"], batches=["image_seg=1", "image_matting=1"],
                              frames=["video_seg=2", "video_matting=2"])
    mix = MixedData(spec, image_size=48, stage=1, seed=2)
    direct, workers = list(_batches(mix, DistContext(), 3, 7, 0)), list(_batches(mix, DistContext(), 3, 7, 2))
    assert [k for k, _ in direct] == [k for k, _ in workers] == [mix.kind_of(s) for s in range(3, 7)]
    assert all(torch.equal(a.images, b.images) and torch.equal(a.box, b.box)
               for (_, xs), (_, ys) in zip(direct, workers) for a, b in zip(xs, ys))
