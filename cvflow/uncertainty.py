"""What `calc` returns besides the flow, for models that predict more (SEA-RAFT's
uncertainty): `cvflow.api.OpticalFlow` inherits these methods.

A model with `ModelDef.info_channels` returns (H, W, 2 + info_channels) from its forward
pass; `_split_info` hands the flow on and keeps the rest as the object's last info,
`getInfo` returns it and `getUncertainty` the model's per-pixel uncertainty of it.
"""
from __future__ import annotations

import numpy as np

from cvflow.errors import InputError


def _all_models():
    import cvflow.models  # noqa: F401  # registers the families on first use
    from cvflow.models.base import REGISTRY

    return REGISTRY


class UncertaintyOutputs:
    """Mixin of `OpticalFlow`: needs `_model`, `_backend` and `_last_info` (None, or the
    last call's (info device array, whether to return NumPy))."""

    def getUncertainty(self):
        """The last `calc`'s per-pixel uncertainty, for models that predict one (SEA-RAFT):
        (H, W) float32, the expected absolute error of the flow in px per axis under the
        model's mixture of Laplace distributions (`cvflow.ops.laplace`). After
        `calcBidirectional`, the forward flow's. NumPy for NumPy frames, as `calc`.
        Raises InputError for a model without uncertainty, or before the first `calc`."""
        info, like = self._checked_info()
        unc = self._model.uncertainty(info, self._model.config)
        return self._backend.to_host(unc) if like else unc

    def getInfo(self):
        """The last `calc`'s raw extra outputs, (H, W, info_channels) float32 (SEA-RAFT: the
        mixture logits and raw log-scales [w0, w1, raw_b0, raw_b1]); errors as `getUncertainty`."""
        info, like = self._checked_info()
        return self._backend.to_host(info) if like else info

    def _checked_info(self):
        """The last call's (info, return-NumPy flag); InputError for a model without
        uncertainty or before the first `calc`."""
        if not self._model.info_channels:
            have = ", ".join(n for n, m in sorted(_all_models().items()) if m.info_channels) or "none"
            raise InputError(f"model {self._model.name!r} predicts no uncertainty; models that do: {have}")
        if self._last_info is None:
            raise InputError(f"no uncertainty yet: call calc(I0, I1) on this {self._model.name!r} object first")
        return self._last_info

    def _split_info(self, out, like):
        """(flow, info) of a forward result: models with `info_channels` return the flow and
        their extra outputs in one array; info is kept with whether it goes back as NumPy."""
        if not self._model.info_channels:
            return out, None
        xp = self._backend.xp
        info = xp.ascontiguousarray(out[..., 2:])
        return xp.ascontiguousarray(out[..., :2]), (info, isinstance(like, np.ndarray))

