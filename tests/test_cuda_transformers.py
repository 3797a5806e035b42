"""GMFlow, GMFlow with refinement and NeuFlow v2 on the CUDA backend: dispatch budgets
from the dispatch profile (448x1024, dry) and both directions on the emulator (graph
replay: tests/test_cuda_graph_models.py's GRAPH_MODELS).

Budgets (executor calls per pass at 448x1024; reached: 416, 669, 465): GMFlow <= 800
(the issue's), GMFlow-refine <= 700, NeuFlow v2 <= 500; no array op outside the executor
in a `calc`, and no host->device copy but the two uint8 frames.
"""
from __future__ import annotations

import numpy as np
import pytest

from cvflow.profiling import frames, profile, random_weights

BUDGETS = {"gmflow": 800, "gmflow-refine": 700, "neuflow2": 500}


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_transformer_models_dispatch_within_budget(name):
    p = profile(name, 448, 1024, dry=True)
    t = p.total
    assert t.executor_calls <= BUDGETS[name], dict(t.launches)
    assert t.other_ops == 0, dict(t.ops)
    assert t.h2d == 2 and t.syncs == 1 and t.d2h == 1       # the frames in, the flow out
    for phase in ("transformer", "matching", "propagation", "upsampling"):
        if phase in p.phases:
            assert p.phases[phase].other_ops == 0, (phase, dict(p.phases[phase].ops))


@pytest.mark.parametrize("name", ["gmflow-refine", "neuflow2"])
def test_bidirectional_on_the_emulator_equals_both_calcs(name):
    """forward_both's batch of both directions (concatenations along the batch axis as
    kernels) against one calc per direction."""
    import cvflow
    from cvflow.testing import cuda_emulator

    f0, f1 = frames(64, 96, seed=4)
    with cuda_emulator():
        of = cvflow.create(name, weights=random_weights(name), device="cuda")
        fw, bw = of.calcBidirectional(f0, f1)
        assert np.abs(fw - of.calc(f0, f1)).max() <= 1e-4
        assert np.abs(bw - of.calc(f1, f0)).max() <= 1e-4
