"""CUDA graphs of the CUDA backend: a pass captured once per key and replayed."""
from __future__ import annotations

import warnings

import numpy as np


class GraphWarning(RuntimeWarning):
    """A pass could not be captured into a CUDA graph and runs eagerly."""


class GraphOps:
    """`graphed` for a backend with an executor `ex` and array module `xp`."""

    def graphed(self, key, fn, *inputs):
        """fn(*inputs) -> device array(s), as a replayed graph: captured once per `key` (the
        caller's: input shapes, dtypes and options) on static copies of the inputs (host or
        device arrays: each call copies them in, a host array straight to the device),
        then replayed. The first call of a key runs fn eagerly on those copies (constants,
        prepared layers and compiled kernels then exist, as a capture needs) and captures
        it; later calls replay. Returns fn's (static) output: valid until the next call with
        the same key. Where the capture fails (the pass breaks a graph's rules), one
        warning, and fn runs eagerly from then on."""
        graphs = self.__dict__.setdefault("_graphs", {})
        entry = graphs.get(key, False)
        if entry is None:  # eager: host inputs uploaded as they are
            return fn(*(self.ex.asarray(x, x.dtype) if self._on_host(x) else x for x in inputs))
        if entry is False:
            static = tuple(self.ex.empty(x.shape, x.dtype) for x in inputs)
            self._copy_in(static, inputs)
            out = fn(*static)  # the warm-up pass, on the static inputs: its result is this call's
            try:
                with self.ex.capture() as held:
                    captured = fn(*static)
                graphs[key] = (held.graph, static, captured)
            except Exception as e:  # any capture failure: eager, said once
                graphs[key] = None
                if not self.__dict__.get("_graph_warned"):
                    self._graph_warned = True
                    warnings.warn(f"CUDA graph capture failed, running eagerly ({type(e).__name__}: {e})",
                                  GraphWarning, stacklevel=2)
            return out
        graph, static, out = entry
        self._copy_in(static, inputs)
        graph.replay()
        return out

    def _on_host(self, x):
        return isinstance(x, np.ndarray) and not isinstance(x, self.xp.ndarray)

    def _copy_in(self, static, inputs):
        for dst, src in zip(static, inputs):
            if src is dst:
                continue
            if self._on_host(src) and hasattr(dst, "set"):
                dst.set(np.ascontiguousarray(src))  # CuPy: host -> device into the buffer
            else:
                dst[...] = src
