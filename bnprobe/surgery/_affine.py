"""The BatchNorm's affine initialisation, taken over by the norm that replaces it, and said in the report.

Models start their BatchNorms' weight and bias by convention: timm's ResNets (``zero_init_last``) and
torchvision's (``zero_init_residual=True``) zero the weight of each residual branch's last BatchNorm,
so every block starts as its shortcut.  A fresh ``nn.GroupNorm`` has weight 1, and would start those
branches differently; timm's own GroupNorm ResNet keeps the 0.  :func:`take_over` copies the weight and
bias the swap finds (the model's initialisation, or a loaded checkpoint's values) into the replacement's
own, and says what it could not take over.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from bnprobe.surgery._batchnorm import bn_value

KEPT = "kept"

_AFFINE = (("weight", 1.0), ("bias", 0.0))
"""The BatchNorm's affine parameters with their neutral values (what a BatchNorm without them applies)."""


def describe_affine(bn: nn.Module) -> str:
    """``weight 0, bias 0``: ``bn``'s weight and bias, each as its value when all channels share one, else
    ``varied``; ``no affine`` for a BatchNorm without them."""
    if all(getattr(bn, name, None) is None for name, _ in _AFFINE):
        return "no affine"
    return ", ".join(f"{name} {_shared_value(bn_value(bn, name, neutral))}" for name, neutral in _AFFINE)


def _shared_value(values: torch.Tensor) -> str:
    first = values[0].item()
    return f"{first:g}" if bool((values == first).all()) else "varied"


def take_over(bn: nn.Module, norm: nn.Module) -> str:
    """Copy ``bn``'s weight and bias into ``norm``'s own ``weight`` and ``bias`` where those have the
    BatchNorm's shape (one value per channel), in place; say what became of them.

    Returns ``kept``, or ``partly kept: ...`` / ``not kept: ...`` naming what did not fit.  A piece that
    cannot be copied is no loss where both sides hold its neutral value (weight 1, bias 0): a BatchNorm
    without affine parameters replaced by a norm without them keeps its convention.
    """
    copied, missing = 0, []
    for name, neutral in _AFFINE:
        value = bn_value(bn, name, neutral)
        own = getattr(norm, name, None)
        own = own if isinstance(own, torch.Tensor) else None
        if own is not None and own.shape == value.shape:
            with torch.no_grad():
                own.copy_(value)
            copied += 1
        elif bool((value == neutral).all()) and (own is None or bool((own == neutral).all())):
            continue
        elif own is None:
            missing.append(f"{type(norm).__name__} has no {name}")
        else:
            missing.append(f"{type(norm).__name__}'s {name} is {tuple(own.shape)}, not {tuple(value.shape)}")
    if not missing:
        return KEPT
    return f"{'partly kept' if copied else 'not kept'}: {'; '.join(missing)}"


def affine_notes(records: list[tuple[str, str]], skipinit: bool) -> list[str]:
    """One report note per way the BatchNorms' affine init went, from each swap's ``(what became of it,
    what it was)``: ``affine init from BN in 20 norms: kept (weight 0, bias 0 in 8; weight 1, bias 0 in 12)``.

    Where zero weights were not kept and no ``+skipinit`` was asked for, the note says that those norms'
    branches no longer start at zero.
    """
    groups: dict[str, Counter[str]] = {}
    for affine, init in records:
        groups.setdefault(affine, Counter())[init] += 1
    notes = []
    for affine, inits in groups.items():
        counts = "; ".join(f"{init} in {n}" for init, n in inits.most_common())
        n = inits.total()
        note = f"affine init from BN in {n} norm{'s' if n != 1 else ''}: {affine} ({counts})"
        zeros = sum(n for init, n in inits.items() if init.startswith("weight 0,"))
        if zeros and affine.startswith("not kept") and not skipinit:
            note += (f"; the {zeros} with weight 0 no longer start their branch at zero "
                     "(+skipinit starts residual branches at zero)")
        notes.append(note)
    return notes
