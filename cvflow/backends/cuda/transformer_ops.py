"""The CUDA backend's ops for the Transformer models (GMFlow, GMFlow-refine, NeuFlow v2):
attention in device-sized blocks with its softmax, shifted windows, matching and local
attention as kernels (`k_attention.py`), and the few point-wise ops they need besides
the backend's glue (`k_tensor.py`). A mixin of `CudaBackend` (which provides `ex`,
`patch_correlation` and `shifted_window_mask`); kept apart so backend.py stays small.

Arrays are float32 or half storage (`k_dtype`); each op returns its input's storage dtype,
except the matching flows, which stay float32 in every mode (k_attention.py), and the
shifted-window mask, a float32 constant.
"""
from __future__ import annotations

import numpy as np

from cvflow.backends.cuda import k_attention, k_tensor
from cvflow.backends.cuda.executor import launch_1d
from cvflow.backends.cuda.k_dtype import kernel


class TransformerOps:
    """Attention, matching and Transformer glue on the executor `self.ex`."""

    token_rows = None  # the feed-forward networks' tokens in one block (the CPU: cache-sized)

    def attention(self, q, k, v, bias=None):
        return k_attention.attention(self.ex, q, k, v, bias)

    def window_attention(self, q, k, v, splits, shift=False, mask=None):
        if shift and mask is None:
            mask = self.shifted_window_mask(q.shape[1], q.shape[2], splits)
        return k_attention.window_attention(self.ex, q, k, v, splits, shift, mask)

    def global_matching(self, f0, f1):
        return k_attention.global_matching(self.ex, f0, f1)

    def local_attention(self, q, k, v, radius):
        corr = self.patch_correlation(q, k, radius, 1)
        return k_attention.local_attention(self.ex, corr, v, radius, q.shape[-1])

    def local_matching(self, f0, f1, radius):
        return k_attention.local_matching(self.ex, self.patch_correlation(f0, f1, radius, 1), radius, f0.shape[-1])

    def gelu_(self, x):
        """GELU in place on a C-contiguous x (the caller's fresh product)."""
        if not x.flags.c_contiguous:
            return self.gelu(x)
        launch_1d(self.ex, kernel("act:gelu", x), x.size, x, np.int32(x.size))
        return x

    def hardtanh(self, x, lo, hi):
        return k_tensor.clamp(self.ex, self.contiguous(x), lo, hi)

    def upsample_nearest(self, x, factor):
        return k_tensor.upsample_nearest(self.ex, self.contiguous(x), factor)
