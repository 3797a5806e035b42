"""Evaluating one's own data: `cvflow eval --pairs LIST` and Middlebury's flat layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cvflow
from cvflow.cli import main
from cvflow.evaluate import evaluate, find_pairs, read_pairs
from test_eval import H, W, _flo, _img, const_model, make  # noqa: F401  (const_model: the model's fixture)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RAFT_SMALL = SHARED / "weights" / "raft-small.pth"
MIDDLEBURY = SHARED / "data" / "middlebury"


def make_own(root: Path):
    """Two pairs: a .flo ground truth with Middlebury-unknown pixels, and a KITTI PNG with a valid mask."""
    _img(root / "a 0.png", 0)
    _img(root / "a 1.png", 1)
    gt = np.full((H, W, 2), 4.0, np.float32)
    gt[:, W // 2:] = 1e10  # unknown: not scored
    cvflow.writeOpticalFlow(root / "a.flo", gt)
    _img(root / "sub" / "b0.png", 2)
    _img(root / "sub" / "b1.png", 3)
    valid = np.zeros((H, W), bool)
    valid[: H // 2] = True
    cvflow.write_kitti_flow(root / "sub" / "b.png", np.full((H, W, 2), 2.0, np.float32), valid)
    (root / "pairs.txt").write_text("# my pairs\n'a 0.png' 'a 1.png' a.flo\n\n"
                                    f"sub/b0.png {root / 'sub' / 'b1.png'} sub/b.png  # absolute works too\n")
    return root / "pairs.txt"


def test_read_pairs_and_evaluate(tmp_path):
    pairs = read_pairs(make_own(tmp_path))
    assert [(p.name, p.gt_format) for p in pairs] == [("a 0.png", "flo"), ("sub/b0.png", "kitti")]
    res = evaluate(make((1.0, 0.0)), pairs, progress=False)
    a, b = res["per_pair"]
    assert a["valid_pixels"] == H * (W // 2) and a["epe"] == pytest.approx(np.hypot(3, 4))
    assert b["valid_pixels"] == W * (H // 2) and b["epe"] == pytest.approx(np.hypot(1, 2))
    assert "fl_all" in res  # KITTI ground truth in the list
    assert len(read_pairs(tmp_path / "pairs.txt", limit=1)) == 1


def test_read_pairs_errors(tmp_path):
    make_own(tmp_path)
    lst = tmp_path / "bad.txt"
    with pytest.raises(cvflow.CvflowFileNotFoundError, match=r"no such pairs list: .*nope\.txt"):
        read_pairs(tmp_path / "nope.txt")
    lst.write_text("a.png b.png\n")
    with pytest.raises(cvflow.InputError, match=r"bad\.txt line 1: expected `frame0 frame1 ground-truth`, got 2 "
                                                r"fields: 'a.png b.png'"):
        read_pairs(lst)
    lst.write_text("\n'a 0.png' missing.png a.flo\n")
    with pytest.raises(cvflow.CvflowFileNotFoundError, match=r"bad\.txt line 2: frame1 .*missing\.png does not exist"):
        read_pairs(lst)
    lst.write_text("'a 0.png' 'a 1.png' 'a 1.png'\n".replace("'a 1.png'\n", "pairs.txt\n"))
    with pytest.raises(cvflow.InputError, match=r"ground truth .*pairs\.txt must be a \.flo file or a KITTI 16-bit "
                                                r"\.png, got \.txt"):
        read_pairs(lst)
    lst.write_text("# nothing\n")
    with pytest.raises(cvflow.InputError, match=r"lists no pairs"):
        read_pairs(lst)
    lst.write_text("'a 0.png\n")
    with pytest.raises(cvflow.InputError, match=r"bad\.txt line 1: No closing quotation"):
        read_pairs(lst)


def test_middlebury_flat_layouts(tmp_path):
    flat = tmp_path / "flat"
    _img(flat / "Grove1.png", 0)
    _img(flat / "Grove2.png", 1)
    _flo(flat / "Grove.flo", (1.0, 0.0))
    _img(flat / "frame10.png", 2)
    _img(flat / "frame11.png", 3)
    _flo(flat / "flow10.flo", (1.0, 0.0))
    pairs = find_pairs(flat, "middlebury")
    assert [(p.name, Path(p.frame0).name, Path(p.frame1).name) for p in pairs] == [
        ("Grove", "Grove1.png", "Grove2.png"), ("flow10", "frame10.png", "frame11.png")]
    with pytest.raises(cvflow.InputError, match=r"no middlebury pairs found under .*<name>1\.png, <name>2\.png "
                                                r"and <name>\.flo"):
        find_pairs(tmp_path / "flat" / "..", "middlebury")


def test_cli_eval_pairs(tmp_path, capsys):
    lst = make_own(tmp_path)
    weights = tmp_path / "w.npz"
    cvflow.save_converted({"flow": np.array([1.0, 0.0], np.float32)}, weights)
    code = main(["eval", "--pairs", str(lst), "-m", "test-eval-const", "--weights", str(weights), "--json", "-",
                 "--no-progress"])
    out = capsys.readouterr()
    assert code == 0
    res = json.loads(out.out)
    assert res["pairs"] == 2 and res["pairs_list"] == str(lst) and "dataset" not in res
    assert main(["eval", "--pairs", str(lst), str(tmp_path), "--dataset", "chairs", "-m", "test-eval-const"]) == 2
    assert "cvflow eval: error: give either --pairs LIST or ROOT with --dataset, not both" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "-m", "test-eval-const"]) == 2
    assert "cvflow eval: error: give ROOT and --dataset {sintel,kitti,chairs,middlebury}, or --pairs LIST" in \
        capsys.readouterr().err


@pytest.mark.slow
def test_readme_middlebury_figure_reproduces(capsys):
    """README: RAFT-small on RubberWhale (../shared/data/middlebury, flat), EPE 0.320 px as the reference."""
    if not (RAFT_SMALL.is_file() and (MIDDLEBURY / "RubberWhale.flo").is_file()):
        pytest.skip(f"RAFT-small checkpoint or Middlebury RubberWhale not found under {SHARED}")
    code = main(["eval", str(MIDDLEBURY), "--dataset", "middlebury", "-m", "raft-small", "--weights", str(RAFT_SMALL),
                 "--json", "-", "--no-progress"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pairs"] == 1 and f"{res['epe']:.3f}" == "0.320"
