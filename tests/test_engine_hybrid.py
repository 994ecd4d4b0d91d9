"""`hybrid` engine: SAM2 masks (tiny random weights) + classic trimap and matte stages."""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sam2")

from mam2_server.engines import EngineConfig, EngineError, create_engine  # noqa: E402
from mam2_server.prompts import Prompt  # noqa: E402



def make_source(linear):
    from mam2_server.io import ArraySource

    return ArraySource(linear)


def clip(n=3, w=72, h=45):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        img = 0.1 + 0.1 * rng.random((h, w, 3))
        img[(xx - 25 - 3 * i) ** 2 + (yy - 22) ** 2 < 100] = (0.8, 0.3, 0.1)
        out.append(img.astype(np.float32))
    return out


def test_hybrid_engine_runs(tmp_path, monkeypatch):
    from mam2_server.model.checkpoint import save_tiny_checkpoint

    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    try:
        import mam2_server.engines.classic  # noqa: F401  the contract: trimap_and_matte_stages()
    except ImportError:
        pytest.skip("classic engine (trimap and matte stages) not available yet")
    engine = create_engine(EngineConfig("hybrid", checkpoint=str(ckpt), device="cpu"))
    assert not engine.chained
    src = make_source(clip(n=3))
    results = list(engine.run(src, [Prompt(frame=src.frames[1], box=(15, 12, 36, 33))]))
    assert sorted(r.frame for r in results) == list(src.frames)
    for r in results:
        assert r.alpha.shape == (45, 72) and np.isfinite(r.alpha).all()


def test_hybrid_needs_a_checkpoint():
    with pytest.raises(EngineError, match="--checkpoint"):
        create_engine(EngineConfig("hybrid"))
