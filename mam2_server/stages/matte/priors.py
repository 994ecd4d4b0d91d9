"""Closed-form matting with per-pixel priors: argmin a^T L a + sum_i c_i (a_i - p_i)^2.

L is the matting Laplacian of the display image (pymatting); pixels whose confidence reaches
HARD are fixed to their prior (known foreground / background).
"""
from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import scipy.sparse

from mam2_server.stages.segment.common import bbox

HARD = 100.0
log = logging.getLogger(__name__)


def quietly(solve, *args, **kwargs):
    """Call a pymatting solver. When its incomplete Cholesky must retry with a diagonal shift,
    pymatting prints a "PERFORMANCE WARNING" block to stdout, which in an artist's terminal reads as
    a failure: the retry is routine (the solve is still right), so it goes to the debug log."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = solve(*args, **kwargs)
    if out.getvalue():
        log.debug("pymatting: %s", " ".join(out.getvalue().split()))
    return result


def solve_with_priors(image: np.ndarray, prior: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """argmin a^T L a + sum c (a - p)^2 with pixels of c >= HARD fixed to p. image: display RGB."""
    from pymatting import cf_laplacian, cg, ichol

    hard = conf >= HARD
    free = ~hard
    out = np.where(hard, prior, 0.0).astype(np.float64)
    if not free.any():
        return out.astype(np.float32)
    h, w = prior.shape
    box = bbox(free)
    x0, y0, x1, y1 = box
    m = 3
    x0, y0, x1, y1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
    img = np.clip(image[y0:y1, x0:x1], 0, 1).astype(np.float64)
    P = prior[y0:y1, x0:x1].astype(np.float64).ravel()
    C = conf[y0:y1, x0:x1].astype(np.float64).ravel()
    F = free[y0:y1, x0:x1].ravel()
    known = ~F
    if img.shape[0] < 3 or img.shape[1] < 3:
        out[y0:y1, x0:x1] = np.where(F.reshape(img.shape[:2]), P.reshape(img.shape[:2]), out[y0:y1, x0:x1])
        return out.astype(np.float32)
    L = cf_laplacian(img, is_known=known.reshape(img.shape[:2]) & (C.reshape(img.shape[:2]) >= HARD))
    L = L.tocsr()
    Lff = L[F][:, F]
    Lfk = L[F][:, known]
    cf = np.where(C[F] >= HARD, 0.0, C[F])
    # a weak pull towards the prior keeps regions cut off from every constraint well-posed
    cf = np.maximum(cf, 1e-4)
    A = (Lff + scipy.sparse.diags(cf)).tocsr()
    b = cf * P[F] - Lfk @ P[known]
    x = None
    try:
        with np.errstate(all="ignore"):
            x = cg(A, b, M=quietly(ichol, A.tocsc()), rtol=1e-6, maxiter=1000)
    except Exception:
        x = None
    if x is None or not np.isfinite(x).all():
        from scipy.sparse import linalg as spla
        try:
            x = spla.spsolve(A.tocsc(), b)
        except Exception:  # pragma: no cover - keep the priors
            x = P[F]
        if not np.isfinite(x).all():
            x = P[F]
    sub = P.copy()
    sub[F] = x
    out[y0:y1, x0:x1] = sub.reshape(img.shape[:2])
    return np.clip(out, 0, 1).astype(np.float32)
