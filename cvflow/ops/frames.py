"""Input protocols that join a frame pair into one network input."""
from __future__ import annotations

from cvflow.arrays import get_xp


def mean_free_pair(img0, img1, rgb_max=255.0):
    """FlowNet2's input: BGR (H, W, 3) (or gray (H, W)) frames in 0..rgb_max -> (1, H, W, 6)
    float32, RGB of img0 then of img1, minus the per-channel mean over both frames (float64
    sums), / rgb_max."""
    xp = get_xp(img0)
    if img0.ndim == 2:
        img0, img1 = (xp.repeat(f[:, :, None], 3, axis=2) for f in (img0, img1))
    x = xp.concatenate([img0[..., ::-1], img1[..., ::-1]], axis=-1).astype(xp.float32, copy=False)
    sums = x.reshape(-1, 6).sum(axis=0, dtype=xp.float64)
    mean = (sums[:3] + sums[3:]) / (2 * x.shape[0] * x.shape[1])
    x -= xp.concatenate([mean, mean]).astype(xp.float32)
    x /= xp.float32(rgb_max)
    return x[None]
