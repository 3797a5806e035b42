"""PyTorch's side of bench/gpu_bench.py's latency rows: torchvision's RAFT (cvflow's
weights, mapped by the packed key maps) and the authors' RAFT / GMFlow / FlowNet2 code
where importable ($RAFT_ROOT, $GMFLOW_ROOT, $FLOWNET2_ROOT), each skipped with a message
otherwise. Timed as cvflow's rows (`gpu_timing`)."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np

from gpu_inputs import PACK
from gpu_timing import SPIN_CYCLES, gpu_ms, median_ms


def _torch_nets(torch, dev, name, options, weights):
    """{label: fn(a, b) -> device flow}, a and b (1, 3, H, W) float RGB 0..255 on the device,
    for the PyTorch codes importable here; messages for the rest."""
    import os

    nets = {}
    iters = options.get("iters", 12)
    if name.startswith("raft"):
        try:
            nets["torchvision"] = _torchvision_raft(torch, dev, name, weights, iters)
        except Exception as e:  # absent, or an API/layout it does not match: say so, go on
            print(f"  {name}: torchvision RAFT skipped ({type(e).__name__}: {e})")
        root = os.environ.get("RAFT_ROOT")
        try:
            if not root:
                raise ImportError("set RAFT_ROOT to a princeton-vl/RAFT checkout")
            sys.path.insert(0, str(Path(root) / "core"))
            from raft import RAFT

            net = RAFT(argparse.Namespace(small=name == "raft-small", mixed_precision=False, alternate_corr=False))
            net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
            net = net.to(dev).eval()
            nets["authors"] = lambda a, b: net(a, b, iters=iters, test_mode=True)[1]
        except Exception as e:
            print(f"  {name}: authors' RAFT skipped ({type(e).__name__}: {e})")
    if name.startswith("gmflow"):
        root = os.environ.get("GMFLOW_ROOT")
        try:
            if not root:
                raise ImportError("set GMFLOW_ROOT to a haofeixu/gmflow checkout")
            sys.path.insert(0, str(root))
            from gmflow.gmflow import GMFlow

            net = GMFlow(feature_channels=128, num_scales=1, upsample_factor=8, num_head=1, attention_type="swin",
                         ffn_dim_expansion=4, num_transformer_layers=6)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
            net = net.to(dev).eval()
            nets["authors"] = lambda a, b: net(a, b, attn_splits_list=[2], corr_radius_list=[-1],
                                               prop_radius_list=[-1])["flow_preds"][-1]
        except Exception as e:
            print(f"  {name}: authors' GMFlow skipped ({type(e).__name__}: {e})")
    if name == "flownet2":
        root = os.environ.get("FLOWNET2_ROOT")
        try:
            if not root:
                raise ImportError("set FLOWNET2_ROOT to a built NVIDIA/flownet2-pytorch checkout")
            sys.path.insert(0, str(root))
            from models import FlowNet2

            net = FlowNet2(argparse.Namespace(rgb_max=255.0, fp16=False), batchNorm=False)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
            net = net.to(dev).eval()
            nets["authors"] = lambda a, b: net(torch.stack([a, b], dim=2))  # (1, 3, 2, H, W)
        except Exception as e:
            print(f"  {name}: authors' FlowNet2 skipped ({type(e).__name__}: {e})")
    return nets


def _torchvision_raft(torch, dev, name, weights, iters):
    """torchvision's raft_large / raft_small with cvflow's weights, renamed by the packed key map."""
    from torchvision.models.optical_flow import raft_large, raft_small

    net = (raft_small if name == "raft-small" else raft_large)(weights=None)
    table = PACK / f"raft_{'small' if name == 'raft-small' else 'large'}_key_mapping.tsv"
    state = net.state_dict()
    if table.is_file():
        rows = [line.split("\t") for line in table.read_text().splitlines()[1:] if line.strip()]
        for authors, tv, _ in rows:
            key = authors.removeprefix("module.")
            if tv in state and key in weights:
                state[tv] = torch.from_numpy(weights[key]).reshape(state[tv].shape)
        net.load_state_dict(state)
    else:
        print(f"  {name}: no key map at {table}: torchvision runs its own random weights")
    net = net.to(dev).eval()
    return lambda a, b: net(a / 127.5 - 1, b / 127.5 - 1, num_flow_updates=iters)[-1]


def torch_rows(name, options, weights, f0, f1, repeat, autocast=None):
    """[(label, wall ms, GPU ms, host behind)] of the PyTorch codes on this pair; autocast:
    a dtype (torch.float16 / torch.bfloat16) to run them under torch.autocast("cuda", dtype)."""
    try:
        import torch
    except ImportError:
        print(f"  {name}: torch not importable: PyTorch comparisons skipped")
        return []
    dev = torch.device("cuda")
    rows = []
    for label, fn in _torch_nets(torch, dev, name, options, weights).items():
        def upload():
            return [torch.from_numpy(np.ascontiguousarray(f[..., ::-1])).to(dev).permute(2, 0, 1)[None].float()
                    for f in (f0, f1)]

        def mode():
            if autocast is None:
                return contextlib.nullcontext()
            return torch.autocast("cuda", dtype=autocast)

        def wall():
            with torch.inference_mode(), mode():
                fn(*upload()).float().cpu()  # host frames in, host flow out, as cvflow's calc

        a, b = upload()

        def on_device():
            with torch.inference_mode(), mode():
                fn(a, b)

        ms = median_ms(wall, repeat)
        gpu, behind = gpu_ms(on_device, lambda: torch.cuda._sleep(SPIN_CYCLES),
                              lambda timing: torch.cuda.Event(enable_timing=timing), min(repeat, 5))
        rows.append((label, ms, gpu, behind))
    return rows
