"""Small in-memory clips shared by the engine tests."""
import numpy as np

from mam2_server.io import ArraySource


def moving_disc(n: int = 5, w: int = 72, h: int = 45) -> ArraySource:
    """n frames of an orange disc moving right over dim noise (scene-linear), as a FrameSource."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        img = 0.1 + 0.1 * rng.random((h, w, 3))
        img[(xx - 25 - 3 * i) ** 2 + (yy - 22) ** 2 < 100] = (0.8, 0.3, 0.1)
        frames.append(img.astype(np.float32))
    return ArraySource(frames)
