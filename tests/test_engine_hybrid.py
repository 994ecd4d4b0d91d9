"""`hybrid` engine: SAM2 masks (tiny random weights) + classic trimap and matte stages."""
import numpy as np
import pytest

from frames import moving_disc
from mam2_server.engines import EngineConfig, EngineError, create_engine
from mam2_server.prompts import Prompt


def test_hybrid_engine_runs(tmp_path, monkeypatch):
    from mam2_server.model.checkpoint import save_tiny_checkpoint

    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    engine = create_engine(EngineConfig("hybrid", checkpoint=str(ckpt), device="cpu"))
    assert not engine.chained
    src = moving_disc(n=3)
    results = list(engine.run(src, [Prompt(frame=src.frames[1], box=(15, 12, 36, 33))]))
    assert sorted(r.frame for r in results) == list(src.frames)
    for r in results:
        assert r.alpha.shape == (45, 72) and np.isfinite(r.alpha).all()


def test_hybrid_needs_a_checkpoint():
    with pytest.raises(EngineError, match="--checkpoint"):
        create_engine(EngineConfig("hybrid"))
