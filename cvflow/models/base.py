"""What a model is to the rest of cvflow: a definition in a registry.

A model is data (its config and weights) flowing through a pure `forward`
function; variants of one architecture are the same functions with another config.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

REGISTRY: dict[str, "ModelDef"] = {}


@dataclass(frozen=True)
class ModelDef:
    """One registered model.

    forward(params, img0, img1, config, options, init_flow) -> (H, W, 2) float32 flow,
    with img0/img1 float32 (H, W, 3) BGR in 0..255 and params the nested weight dict, as
    placed by the object's backend (`cvflow.backends.base.Params`; the model runs its ops
    on `backend_of(params)`).
    param_shapes(config) -> {checkpoint key (no `module.`): shape} for every tensor.
    prepare_size: side of a blank frame pair that `create()` runs once, so that every
    layer's derived weight matrices (transposed, Winograd-transformed) exist before the
    first `calc` (0: none).
    reuse_bytes: run forward in the object's activation arena (`cvflow.ops.arena`),
    keeping arrays of at least this many bytes between calls (0: no arena). Fresh
    pages of large arrays cost FlowNet2 ~0.9 s of 4.2 s (1 MiB floor) and RAFT-small's
    correlation volumes up to 0.25 s per pair (32 MiB floor; a 1 MiB floor raised
    RAFT's peak memory by half for no further gain).
    forward_both(params, img0, img1, config, options) -> (flow img0->img1, flow img1->img0),
    each (H, W, 2) float32: both directions in one pass that shares what it can (None:
    `calcBidirectional` runs `forward` twice, with the frames swapped).
    info_channels: models that predict more than the flow (SEA-RAFT's uncertainty) return
    (H, W, 2 + info_channels) from forward / forward_both, the flow first; `calc` hands
    out the flow and keeps the rest for `uncertainty(info, config) -> (H, W)` px.
    adapt_weights(flat) -> flat: the file's keys made the model's before they are checked
    (e.g. a tensor stored under one of two alias keys copied to the other).
    device_frames: forward also takes the frames as `calc` uploads them to a GPU (uint8 or
    float32, (H, W, 3) BGR or (H, W) gray) and normalises them with `be.frames` (one
    kernel); False: the frames arrive as float32 (H, W, 3) BGR on every backend.
    """

    name: str
    family: str
    config: Mapping[str, Any]
    param_shapes: Callable[[Mapping[str, Any]], dict]
    forward: Callable[..., Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    min_size: int = 0
    description: str = ""
    reuse_bytes: int = 0
    prepare_size: int = 0
    forward_both: Callable[..., Any] | None = None
    info_channels: int = 0
    uncertainty: Callable[..., Any] | None = None
    adapt_weights: Callable[..., Any] | None = None
    device_frames: bool = False


def register(model: ModelDef) -> ModelDef:
    """Add a model to the registry under its public name."""
    REGISTRY[model.name] = model
    return model
