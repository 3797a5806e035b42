"""RAFT checkpoints in torchvision's key layout, renamed to the authors' (which cvflow uses).

torchvision's ``raft_large`` / ``raft_small`` hold the same tensors as the authors'
``raft-things.pth`` / ``raft-small.pth`` under other names, with no reshaping:
``feature_encoder.layer1.0.convnormrelu1.0.weight`` is ``fnet.layer1.0.conv1.weight``.
One difference is not a rename: the authors' blocks register their shortcut's norm
twice (``normN`` and ``downsample.1``, the same module), so their large context
encoder (batch norm) stores each strided block's ``norm3.*`` a second time;
torchvision stores it once, as ``downsample.1.*``.

The layout is told from the keys alone (``detect_layout``), never from a file name.
Keys here carry no ``module.`` prefix (``normalize_state_dict`` has removed it).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from cvflow.errors import WeightsError

__all__ = ["AUTHORS", "TORCHVISION", "detect_layout", "torchvision_to_authors", "authors_to_torchvision",
           "check_norm_aliases", "rename_key"]

AUTHORS, TORCHVISION = "authors", "torchvision"

# The encoders' names: torchvision's -> the authors'.
_ENCODERS = {"feature_encoder": "fnet", "context_encoder": "cnet"}

# One rule per kind of module: (torchvision prefix, authors' prefix). Placeholders:
# {enc} an encoder (named per layout, see _ENCODERS), {i} {j} {k} integers, {g} a GRU
# gate (z, r or q). The tensor's leaf name (weight, bias, running_mean, ...) follows.
_RULES = (
    ("{enc}.convnormrelu.0.", "{enc}.conv1."),                      # stem conv
    ("{enc}.convnormrelu.1.", "{enc}.norm1."),                      # stem norm
    ("{enc}.layer{i}.{j}.convnormrelu{k}.0.", "{enc}.layer{i}.{j}.conv{k}."),
    ("{enc}.layer{i}.{j}.convnormrelu{k}.1.", "{enc}.layer{i}.{j}.norm{k}."),
    ("{enc}.layer{i}.{j}.downsample.{k}.", "{enc}.layer{i}.{j}.downsample.{k}."),
    ("{enc}.conv.", "{enc}.conv2."),                                # 1x1 output conv
    ("update_block.motion_encoder.convcorr{k}.0.", "update_block.encoder.convc{k}."),
    ("update_block.motion_encoder.convflow{k}.0.", "update_block.encoder.convf{k}."),
    ("update_block.motion_encoder.conv.0.", "update_block.encoder.conv."),
    ("update_block.flow_head.conv{k}.", "update_block.flow_head.conv{k}."),
    ("mask_predictor.convrelu.0.", "update_block.mask.0."),
    ("mask_predictor.conv.", "update_block.mask.2."),
)
# RAFT's GRU is two separable ConvGRUs (1x5 then 5x1; the authors number the gates'
# convs: convz1, convz2), RAFT-small's one 3x3 ConvGRU (authors: convz).
_GRU_SEPARABLE = ("update_block.recurrent_block.convgru{k}.conv{g}.", "update_block.gru.conv{g}{k}.")
_GRU_SINGLE = ("update_block.recurrent_block.convgru1.conv{g}.", "update_block.gru.conv{g}.")

_SLOTS = {"enc": None, "i": r"\d+", "j": r"\d+", "k": r"\d+", "g": "[zrq]"}


def _compile(template: str, encoders) -> re.Pattern:
    """A rule side as an anchored regex with a named group per placeholder, then the leaf."""
    out = re.escape(template)
    for slot, pattern in _SLOTS.items():
        pattern = pattern or "|".join(encoders)
        out = out.replace(re.escape("{" + slot + "}"), f"(?P<{slot}>{pattern})")
    return re.compile(f"^{out}(?P<leaf>[A-Za-z_]+)$")


def _rules(direction: str, separable_gru: bool):
    """[(regex over the source layout's keys, target template, encoder renames)]."""
    rules = _RULES + ((_GRU_SEPARABLE if separable_gru else _GRU_SINGLE),)
    to_authors = direction == AUTHORS
    encoders = _ENCODERS if to_authors else {v: k for k, v in _ENCODERS.items()}
    out = []
    for tv, au in rules:
        src, dst = (tv, au) if to_authors else (au, tv)
        out.append((_compile(src, encoders), dst, encoders))
    return out


def rename_key(key: str, rules) -> str | None:
    """``key`` in the other layout (see ``_rules``), or None when no rule covers it."""
    for pattern, target, encoders in rules:
        m = pattern.match(key)
        if m:
            parts = m.groupdict()
            if parts.get("enc"):
                parts["enc"] = encoders[parts["enc"]]
            return target.format(**parts) + parts["leaf"]
    return None


_MARKERS = {
    TORCHVISION: ("feature_encoder.", "context_encoder.", "update_block.motion_encoder.",
                  "update_block.recurrent_block.", "mask_predictor."),
    AUTHORS: ("fnet.", "cnet.", "update_block.encoder.", "update_block.gru.", "update_block.mask."),
}


def detect_layout(keys) -> str | None:
    """"torchvision", "authors" or None (neither: not RAFT weights), from the key names.

    Raises WeightsError for keys of both layouts mixed in one state dict.
    """
    found = {layout: [k for k in keys if k.startswith(marks)] for layout, marks in _MARKERS.items()}
    if found[TORCHVISION] and found[AUTHORS]:
        raise WeightsError("the weights mix torchvision's RAFT key layout "
                           f"({found[TORCHVISION][0]!r}, ...) with the authors' ({found[AUTHORS][0]!r}, ...)")
    for layout, hits in found.items():
        if hits:
            return layout
    return None


def _norm_aliases(keys) -> dict[str, str]:
    """{``...layerI.J.downsample.1.leaf``: ``...layerI.J.normN.leaf``} in the authors' layout:
    the shortcut norm of a strided block, registered as normN too, N = the block's convs + 1."""
    convs: dict[str, set] = {}
    for key in keys:
        m = re.match(r"^(.*\.layer\d+\.\d+)\.conv(\d+)\.weight$", key)
        if m:
            convs.setdefault(m.group(1), set()).add(m.group(2))
    aliases = {}
    for key in keys:
        m = re.match(r"^(.*\.layer\d+\.\d+)\.downsample\.1\.([A-Za-z_]+)$", key)
        if m:
            block, leaf = m.groups()
            aliases[key] = f"{block}.norm{len(convs.get(block, ())) + 1}.{leaf}"
    return aliases


def _separable(keys, marker: str) -> bool:
    return any(marker in k for k in keys)


def _rename_all(weights: Mapping, rules, skip, layout: str) -> dict:
    """Every key but those in `skip` renamed by `rules`, in order; WeightsError names
    every key no rule covers (`layout`: the source layout, for the message)."""
    out, unknown = {}, []
    for key, value in weights.items():
        if key in skip:
            continue
        new = rename_key(key, rules)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise WeightsError(f"keys outside {layout} RAFT layout ({len(unknown)}): {', '.join(unknown)}")
    return out


def torchvision_to_authors(weights: Mapping) -> dict:
    """torchvision-layout ``{key: value}`` -> the authors' layout, ordered as given.

    Values are passed through untouched (arrays, or shapes). Every strided block's
    ``downsample.1.*`` is also stored as the authors' ``normN.*``. Raises WeightsError
    naming every key no rule covers.
    """
    rules = _rules(AUTHORS, _separable(weights, "recurrent_block.convgru2."))
    out = _rename_all(weights, rules, (), "torchvision's")
    for key, alias in _norm_aliases(out).items():
        out[alias] = out[key]
    return out


def check_norm_aliases(weights: Mapping) -> None:
    """Raise WeightsError unless every ``normN.*`` copy of a strided block's
    ``downsample.1.*`` (authors' layout) equals it; the model reads ``downsample.1``."""
    differ = [f"{alias} != {key}" for key, alias in _norm_aliases(weights).items()
              if alias in weights and not np.array_equal(weights[alias], weights[key])]
    if differ:
        raise WeightsError("the shortcut norm is stored twice with different values: " + ", ".join(differ))


def authors_to_torchvision(weights: Mapping, check_aliases: bool = True) -> dict:
    """The authors' layout -> torchvision's, ordered as given; the inverse of
    ``torchvision_to_authors``. Each ``normN.*`` duplicate of a strided block's
    ``downsample.1.*`` is dropped, after checking the two are equal (check_aliases;
    off for shapes). Raises WeightsError naming unknown keys or unequal duplicates.
    """
    if check_aliases:
        check_norm_aliases(weights)
    aliases = {alias: key for key, alias in _norm_aliases(weights).items()}
    rules = _rules(TORCHVISION, _separable(weights, "update_block.gru.convz1."))
    return _rename_all(weights, rules, aliases, "the authors'")
