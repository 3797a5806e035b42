"""The PyTorch side of bench/cpu.py: torchvision's RAFT on the CPU, with the same weights.

Needs torch and torchvision, which cvflow never depends on: run the bench from its own
environment (bench/cpu.py's docstring says how to make it). Nothing here is imported by
the package or its tests.
"""
from __future__ import annotations

import numpy as np

# cvflow's model name -> torchvision's builder and the checkpoint in ../shared/weights
MODELS = {"raft-small": ("raft_small", "raft_small_tv_layout.pth"),
          "raft": ("raft_large", "raft_large_tv_random.pth")}


def available():
    """None when torch and torchvision import, else the reason they do not."""
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as exc:  # ImportError, or a broken build beside another torch
        return f"{type(exc).__name__}: {exc}"
    return None


def versions():
    import torch
    import torchvision

    return f"torch {torch.__version__}, torchvision {torchvision.__version__}"


def set_threads(n):
    import torch

    torch.set_num_threads(n)


class TorchRAFT:
    """torchvision's raft_small / raft_large in eval mode, loaded from a torchvision-layout
    checkpoint; `__call__(f0, f1)` runs `iters` updates on two BGR uint8 frames, padded to
    a multiple of 8 by edge replication split evenly (the authors' InputPadder, which
    cvflow's `calc` also applies), and returns the last full-resolution flow (H', W', 2)."""

    def __init__(self, name, weights_path, iters):
        import torch
        import torchvision.models.optical_flow as of

        builder, _ = MODELS[name]
        self.model = getattr(of, builder)(weights=None, progress=False)
        state = torch.load(str(weights_path), map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()
        self.iters = iters

    def prepare(self, f0, f1):
        """Frames -> the (1, 3, H', W') tensors the model takes (RGB, -1..1, padded): done
        once, outside the timing, as cvflow's frame conversion is a small part of a call."""
        import torch

        out = []
        for f in (f0, f1):
            rgb = f[..., ::-1].astype(np.float32) * np.float32(2 / 255) - 1
            h, w = rgb.shape[:2]
            ph, pw = -h % 8, -w % 8
            rgb = np.pad(rgb, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="edge")
            out.append(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None])
        return out

    def __call__(self, t0, t1):
        import torch

        with torch.inference_mode():
            return self.model(t0, t1, num_flow_updates=self.iters)[-1]


def profile(fn, rows=25):
    """torch.profiler's CPU table of one call of fn (self CPU time, by operator)."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
