"""`mam2` engine end to end on a tiny random-init checkpoint (CPU)."""
import numpy as np
import pytest

from frames import moving_disc
from mam2_server.engines import EngineConfig, EngineError, create_engine
from mam2_server.prompts import Point, Prompt


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from mam2_server.model.checkpoint import save_tiny_checkpoint

    return str(save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"))


def test_mam2_engine_runs_end_to_end(tiny_ckpt):
    engine = create_engine(EngineConfig("mam2", checkpoint=tiny_ckpt, device="cpu"))
    assert engine.chained
    src = moving_disc()
    f = src.frames
    prompts = [Prompt(frame=f[2], box=(15, 12, 36, 33)), Prompt(frame=f[3], points=(Point(30, 22),))]
    results = list(engine.run(src, prompts))
    assert sorted(r.frame for r in results) == f
    for r in results:
        assert r.alpha.shape == r.mask.shape == r.trimap.shape == (45, 72)
        assert r.alpha.dtype == np.float32 and 0 <= r.alpha.min() and r.alpha.max() <= 1
        assert set(np.unique(r.trimap)) <= {0.0, 0.5, 1.0}
    # re-tracking only the frames after the second keyframe gives the same results as the full run
    again = {r.frame: r for r in engine.run(src, prompts, only=[f[4]])}
    full = {r.frame: r for r in results}
    np.testing.assert_array_equal(again[f[4]].mask, full[f[4]].mask)


def test_mam2_engine_checkpoint_errors(tmp_path):
    with pytest.raises(EngineError, match="sam2.1_hiera_tiny.pt"):
        create_engine(EngineConfig("mam2"))
    with pytest.raises(EngineError, match="not found"):
        create_engine(EngineConfig("mam2", checkpoint=str(tmp_path / "missing.safetensors")))
