"""Finding, downloading and checking model weights.

``resolve_weights(model, weights)`` turns whatever the user passed to ``create()`` --
nothing, a weights tag, a file path, or a mapping of arrays -- into a flat
``{key: float32 array}`` dict with ``module.`` stripped. The registry
(``cvflow/data/registry.json``) names each model's release checkpoint and, for RAFT,
torchvision's files by tag (``weights="C_T_SKHT_V2"``); nothing passed means the
model's default tag, else its release checkpoint. Tagged files are looked up in
cvflow's cache and torch hub's, then downloaded (checked against the sha256 prefix
in their name, or git blob id); release checkpoints in cvflow's cache. ``load_model_weights`` adds
the key layout (torchvision's RAFT keys renamed to the authors') and
``verify_weights``, the check of keys and shapes against the model definition.
"""
from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np

from cvflow.download import download, git_blob_id
from cvflow.errors import CvflowTypeError, DownloadError, WeightsError
from cvflow.io import raft_layouts
from cvflow.io.checkpoint import load_weights, normalize_state_dict

__all__ = ["cache_dir", "hub_dir", "load_registry", "registry_entry", "model_tags", "tag_entry",
           "default_tag", "converted_name", "cached_file", "download", "git_blob_id", "resolve_weights",
           "load_model_weights", "adapt_layout", "verify_weights", "describe_weights"]

_SIZE_SLACK = 1.05       # a download may exceed the published size (MiB, rounded) by 5 %


def cache_dir() -> Path:
    """Where release checkpoints live: ``$CVFLOW_HOME``, default ``~/.cache/cvflow``."""
    return Path(os.environ.get("CVFLOW_HOME") or "~/.cache/cvflow").expanduser()


def hub_dir() -> Path:
    """torch hub's download folder, where torchvision keeps its weights:
    ``$TORCH_HOME/hub/checkpoints``, TORCH_HOME defaulting to ``$XDG_CACHE_HOME/torch``
    (``~/.cache/torch``), as torch.hub resolves it."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


@functools.lru_cache(maxsize=1)
def load_registry() -> dict:
    """The checkpoint registry shipped with the package (``cvflow/data/registry.json``)."""
    text = resources.files("cvflow").joinpath("data", "registry.json").read_text(encoding="utf-8")
    return json.loads(text)


def registry_entry(name: str) -> dict | None:
    """The release checkpoint (an entry without a tag) of model ``name``, or the entry with
    file name ``name``; None when there is none."""
    for entry in load_registry()["checkpoints"]:
        if name == entry["file"] or (name in entry["models"] and not entry.get("tag")):
            return entry
    return None


def model_tags(model_name: str) -> list[dict]:
    """The registry entries that model ``model_name`` accepts as ``weights=<tag>``."""
    return [e for e in load_registry()["checkpoints"] if e.get("tag") and model_name in e["models"]]


def tag_entry(model_name: str, tag: str) -> dict | None:
    """The entry of weights tag ``tag`` (case-insensitive) for ``model_name``, else None."""
    return next((e for e in model_tags(model_name) if e["tag"].lower() == tag.lower()), None)


def default_tag(model_name: str) -> str | None:
    """The tag ``weights=None`` stands for (None: the model's release checkpoint)."""
    return next((e["tag"] for e in model_tags(model_name) if e.get("default")), None)


def converted_name(file: str) -> str:
    """Cache name of a converted release file: ``raft-small.pth`` -> ``raft-small.npz``."""
    stem = file.split(".pth")[0] if ".pth" in file else Path(file).stem
    return stem + ".npz"



def resolve_weights(model_name: str, weights=None, checkpoint: str | None = None) -> dict[str, np.ndarray]:
    """Flat ``{key: float32 ndarray}`` weights for ``model_name``, in the file's key layout.

    ``weights`` is a mapping of arrays (containers unwrapped, ``module.`` stripped), a
    path to a PyTorch checkpoint or cvflow ``.npz``, one of the model's tags
    (``model_tags``; see ``_tagged_checkpoint``), or None: the model's default tag when it
    has one, else its release checkpoint (``checkpoint``, else the registry's file for
    the model) from :func:`cache_dir`, downloaded there when the registry knows a URL.
    Raises WeightsError when no weights can be found, saying which file to get, from
    where, and where to put it.
    """
    if isinstance(weights, Mapping):
        flat = normalize_state_dict(weights)
    elif isinstance(weights, str) and not os.path.exists(weights) and _looks_like_tag(model_name, weights):
        flat = load_weights(_tagged_checkpoint(model_name, weights))
    elif isinstance(weights, (str, os.PathLike)):
        flat = load_weights(weights)
    elif weights is None:
        tag = default_tag(model_name)
        flat = load_weights(_tagged_checkpoint(model_name, tag) if tag else _release_checkpoint(model_name, checkpoint))
    else:
        raise CvflowTypeError("weights must be None, a tag, a path, or a mapping of arrays, "
                              f"got {type(weights).__name__}")
    return _as_float32(flat, model_name)


def _looks_like_tag(model_name: str, text: str) -> bool:
    """A known tag, or a bare word (no folder, no extension) for a model that has tags."""
    if tag_entry(model_name, text):
        return True
    return bool(model_tags(model_name)) and not (os.sep in text or "/" in text or "." in text)


def _tagged_checkpoint(model_name: str, tag: str) -> Path:
    """Path of tag ``tag``'s file: cvflow's cache (a converted ``.npz`` first), torch hub's
    cache, else downloaded into cvflow's cache (sha256 prefix and size checked)."""
    entry = tag_entry(model_name, tag)
    if entry is None:
        tags = ", ".join(e["tag"] for e in model_tags(model_name))
        raise WeightsError(f"unknown weights tag {tag!r} for model {model_name!r}; its tags: {tags} "
                           "(or pass a path to a checkpoint, or a mapping of arrays)")
    file, dest = entry["file"], cache_dir() / entry["file"]
    hub = _in_hub(entry)
    found = _cached(file, hub=hub)
    if found:
        return found
    try:
        return download(entry["url"], dest, entry.get("sha256") or entry.get("sha256_prefix"),
                        entry.get("size"), max_size=_size_limit(entry), git_blob=entry.get("git_blob"))
    except DownloadError as e:
        if e.__cause__ is None:  # size/checksum mismatch: not an offline problem, report as is
            raise
        where = f"{dest.parent} nor in torch hub's cache {hub_dir()}" if hub else None
        why = f"the download failed ({e})"
        raise WeightsError(_missing_message(model_name, file, entry, dest, why, where=where)) from e


def _in_hub(entry) -> bool:
    """Whether torch hub's cache may hold a tagged file (torchvision's do; files from a
    Git repository, checked by their blob id, do not)."""
    return not entry.get("git_blob")


def _cached(file: str, hub: bool) -> Path | None:
    """``file`` in cvflow's cache (its converted ``.npz`` first), then (hub) torch hub's."""
    places = [cache_dir() / converted_name(file), cache_dir() / file] + ([hub_dir() / file] if hub else [])
    return next((p for p in places if p.is_file()), None)


def cached_file(model_name: str, tag: str | None = None, checkpoint: str | None = None) -> Path | None:
    """The cached file ``weights=tag`` (None: the default) loads for ``model_name``, without
    downloading; None when it is not cached (or the tag is unknown)."""
    tag = tag or default_tag(model_name)
    if tag:
        entry = tag_entry(model_name, tag)
        return _cached(entry["file"], hub=_in_hub(entry)) if entry else None
    entry = registry_entry(checkpoint or model_name)
    file = checkpoint or (entry and entry["file"])
    return _cached(file, hub=False) if file else None


def _size_limit(entry) -> int | None:
    """Bytes a download of ``entry`` may reach: its size, else its published size plus slack."""
    if entry.get("size"):
        return int(entry["size"])
    return int(entry["size_mb"] * _SIZE_SLACK * (1 << 20)) if entry.get("size_mb") else None


def _release_checkpoint(model_name: str, checkpoint: str | None) -> Path:
    """Path of the cached release checkpoint, downloading it when possible."""
    entry = registry_entry(checkpoint or model_name)
    file = checkpoint or (entry and entry["file"])
    if file is None:
        raise WeightsError(f"model {model_name!r} has no release checkpoint in the registry; "
                           "pass weights=<path to a checkpoint> or a mapping of arrays")
    dest = cache_dir() / file
    found = _cached(file, hub=False)
    if found:
        return found
    url = entry and entry.get("url")
    if not url:
        raise WeightsError(_missing_message(model_name, file, entry, dest, "it cannot be downloaded "
                                            "automatically"))
    try:
        return download(url, dest, entry.get("sha256"), entry.get("size"), max_size=_size_limit(entry))
    except DownloadError as e:
        if e.__cause__ is None:  # size/checksum mismatch: not an offline problem, report as is
            raise
        why = f"the download failed ({e})"
        raise WeightsError(_missing_message(model_name, file, entry, dest, why)) from e


def _missing_message(model_name, file, entry, dest, why, where=None) -> str:
    tag = f" (weights {entry['tag']!r})" if entry and entry.get("tag") else ""
    where = f"neither in {where}" if where else f"not in {dest.parent}"
    lines = [f"no weights for model {model_name!r}{tag}: {file} is {where}, and {why}."]
    if entry and entry.get("url"):
        lines.append(f"  download it from: {entry['url']}")
    if entry:
        lines += [f"  get it from: {entry['source']}", f"  licence: {entry['license']}"]
    lines.append(f"  put it at: {dest} (or set CVFLOW_HOME to the folder holding it)")
    if entry and entry.get("tag") and _in_hub(entry):
        lines.append(f"  or at: {hub_dir() / file} (torch hub's cache, where torchvision keeps it)")
    lines.append("  or pass weights=<path to a .pth checkpoint or converted .npz>, or a mapping of arrays")
    return "\n".join(lines)


def load_model_weights(model, weights=None) -> dict[str, np.ndarray]:
    """``resolve_weights`` for ``model`` (a ``ModelDef``), then ``adapt_layout``."""
    return adapt_layout(resolve_weights(model.name, weights, checkpoint=model.checkpoint), model)


def adapt_layout(flat: Mapping, model) -> Mapping:
    """``flat`` checked against ``model`` (``verify_weights``) and in its key layout.

    RAFT weights in torchvision's layout are checked in that layout (errors name the
    file's own keys), then renamed to the authors' layout the model uses.
    """
    expected = model.param_shapes(model.config)
    hint = functools.partial(_other_model_hint, flat, model)
    if model.adapt_weights is not None:
        flat = model.adapt_weights(flat)
    if model.family == "raft" and raft_layouts.detect_layout(flat) == raft_layouts.TORCHVISION:
        tv_expected = raft_layouts.authors_to_torchvision(expected, check_aliases=False)
        verify_weights(flat, tv_expected, model.name, layout="torchvision's RAFT key layout", hint=hint)
        return raft_layouts.torchvision_to_authors(flat)
    # The authors' duplicated shortcut norms are not compared here: the model reads
    # downsample.1 (as the authors' code does when the two differ, e.g. synthetic weights).
    return verify_weights(flat, expected, model.name, hint=hint)


def _match(flat: Mapping, expected: Mapping) -> float:
    """Share of the union of keys present in both with the same shape (1.0: the same key set and shapes)."""
    same = sum(1 for k, s in expected.items() if k in flat and tuple(np.shape(flat[k])) == tuple(s))
    return same / len(set(flat) | set(expected)) if expected else 0.0


def _other_model_hint(flat: Mapping, model) -> str | None:
    """'they look like a checkpoint of model X' for the registered model whose keys and shapes match
    `flat` best (at least half of them), or None."""
    from cvflow.models.base import REGISTRY  # the model definitions (filled by cvflow.models)

    try:  # compare in the authors' layout, as the definitions are written
        authors = raft_layouts.torchvision_to_authors(flat) \
            if raft_layouts.detect_layout(flat) == raft_layouts.TORCHVISION else flat
    except Exception:  # a file too damaged to rename is compared as it is
        authors = flat
    best, score = None, 0.5
    for other in REGISTRY.values():
        if other.name == model.name:
            continue
        try:
            shapes = other.param_shapes(other.config)
        except Exception:  # a definition that cannot list its shapes is no candidate
            continue
        m = _match(authors, shapes)
        if m > score:
            best, score = other, m
    if best is None:
        return None
    how = "every key and shape matches" if score == 1.0 else f"{100 * score:.0f}% of the keys and shapes match"
    return (f"they look like a checkpoint of model {best.name!r} ({how}): create {best.name!r} instead "
            f"(-m {best.name} on the command line)")


def _as_float32(flat: Mapping, model_name: str) -> dict[str, np.ndarray]:
    out = {}
    for key, arr in flat.items():
        if arr.dtype.kind not in "biuf":
            raise WeightsError(f"weights for {model_name!r}: {key!r} has dtype {arr.dtype}, "
                               "expected a real number type")
        out[key] = np.asarray(arr, dtype=np.float32, order="C")  # keeps 0-d tensors 0-d
    return out


_LISTED = 4  # keys named per kind of problem; the rest are counted


def verify_weights(weights: Mapping, expected_shapes: Mapping, model_name: str,
                   layout: str | None = None, hint=None) -> Mapping:
    """Check that ``weights`` has exactly the keys and shapes of ``expected_shapes``.

    Returns ``weights`` unchanged; raises one WeightsError counting every missing,
    unexpected and mis-shaped key and naming the first few of each (``layout``: the key
    layout named in the message; ``hint()``: a line saying which model the weights fit, or None).
    """
    expected = {k: tuple(int(d) for d in s) for k, s in expected_shapes.items()}
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshaped = [f"{k} expected {expected[k]}, got {tuple(np.shape(weights[k]))}"
                 for k in expected if k in weights and tuple(np.shape(weights[k])) != expected[k]]
    if not (missing or unexpected or misshaped):
        return weights
    where = f"{layout}, " if layout else ""
    lines = [f"weights do not match model {model_name!r} "
             f"({where}{len(expected)} tensors expected, {len(weights)} given):"]
    other = hint() if hint is not None else None
    if other:
        lines.append(f"  {other}")
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if items:
            more = f", ... ({len(items) - _LISTED} more)" if len(items) > _LISTED else ""
            lines.append(f"  {label} ({len(items)}): " + ", ".join(items[:_LISTED]) + more)
    if len(missing) == len(expected) and not other:
        lines.append("  no expected key is present: are these weights for another model?")
    raise WeightsError("\n".join(lines))


def describe_weights(model_name: str) -> dict:
    """What ``weights=`` can name for ``model_name``: {"default": tag or release file,
    "weights": [{"tag", "file", "default", "data", "trained_by", "metrics", "license",
    "url", "source"}, ...]}, the tags first, then the release checkpoint (tag None)."""
    fields = ("file", "data", "trained_by", "metrics", "license", "url", "source")
    # copies: callers may edit the rows, the registry is cached
    rows = [{"tag": e["tag"], "default": bool(e.get("default")), **copy.deepcopy({f: e.get(f) for f in fields})}
            for e in model_tags(model_name)]
    release = registry_entry(model_name)
    if release:
        rows.append({"tag": None, "default": not rows, **copy.deepcopy({f: release.get(f) for f in fields})})
    default = next((r["tag"] or r["file"] for r in rows if r["default"]), None)
    return {"default": default, "weights": rows}
