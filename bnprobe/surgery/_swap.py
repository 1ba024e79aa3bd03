"""Norm surgery: make variants of a CNN with its BatchNorm layers swapped for something else.

bnprobe compares a model with BatchNorm (variant ``bn``) against copies of it whose BatchNorm layers
were replaced.  :func:`make_variant` deep-copies the model and then swaps, so every variant made from
one model starts from the same conv and linear weights; the copy's layer names stay those of the
original, so capture can line layers up across variants.

**Sources** (:data:`BATCHNORM_TYPES`): ``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm``, timm's norm-act
layers (``BatchNormAct2d``, ``SyncBatchNormAct``, ``FrozenBatchNormAct2d``) and torchvision's
``FrozenBatchNorm2d`` (which timm uses too).  A timm norm-act layer applies ``bn -> drop -> act`` in one
module; its replacement is a :class:`NormAct` holding the new norm plus the *same* ``drop`` and ``act``
objects under the same names, so ``bn1.act`` keeps its path and the activation is not lost.  (Swapping
such a layer for a bare ``nn.Identity`` silently drops its activation -- the bug of timm issue 1254,
where converting ``BatchNormAct2d`` to ``SyncBatchNorm`` lost it.)

The targets are described in :mod:`bnprobe.surgery._targets`, fold in :mod:`bnprobe.surgery._fold`
and skipinit in :mod:`bnprobe.surgery._skipinit`.

**bias** (``identity+bias``): BatchNorm's shift makes a bias in the layer before it redundant, so
CNNs build ``conv(bias=False) -> BN``, and swapping the BN for ``identity`` leaves the conv with no
bias at all -- "no normalisation" mixed up with "no bias".  ``+bias`` gives each BatchNorm's producing
conv or linear layer (found as ``fold`` finds it) a trainable, zero-initialised bias where it has
none; where there is no such layer (the norm does not follow a conv, the conv's output is read
elsewhere too, the model does not trace) the replacement itself is a :class:`ChannelBias`.  Only
``identity`` takes it: the other targets keep a per-channel shift of their own (GroupNorm, LayerNorm
and InstanceNorm's affine bias, ``frozen``'s shift, ``fold``'s folded bias).  A zero bias changes
nothing at initialisation: the variant starts as the bias-free one and can learn the offsets.

**affine init** (:mod:`bnprobe.surgery._affine`): a replacement with a weight and bias per channel
starts from the BatchNorm's, as the swap finds them, so a model's convention (timm's ``zero_init_last``
zero weight) survives the swap; ``frozen`` and ``fold`` carry them in what they compute, ``identity``
has none.  Each record says what the BatchNorm's were and what became of them, and the report's notes
sum that up.  With ``+skipinit`` a zero weight in a recognised residual block is taken as 1
(:func:`unzero_branch_norms`), since skipinit's zeroed conv starts the branch at zero instead.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from bnprobe._common import REFERENCE_VARIANT
from bnprobe.errors import BnprobeError
from bnprobe.surgery._affine import KEPT, affine_notes, describe_affine, take_over
from bnprobe.surgery._batchnorm import find_batchnorms, num_channels, own_params, require_batchnorm
from bnprobe.surgery._fold import FoldPlan, fold_into, fold_plan
from bnprobe.surgery._norms import ChannelBias, NormAct
from bnprobe.surgery._skipinit import apply_skipinit, skipinit_note, unzero_branch_norms, unzero_note
from bnprobe.surgery._targets import NormFactory, Target, TargetSpec, resolve_target


@dataclass(frozen=True)
class SwapRecord:
    """What happened to one BatchNorm layer."""

    path: str
    old_type: str
    new_type: str
    params_before: int
    """Parameters of the BatchNorm itself (its kept activation is not counted)."""
    params_after: int
    """Parameters of the replacement norm, plus any bias ``fold`` or ``+bias`` added to the producing layer."""
    activation: str | None = None
    """Type name of the activation a norm-act layer carried and that was kept, else None."""
    note: str = ""
    affine_init: str = ""
    """The BatchNorm's weight and bias when swapped: ``weight 0, bias 0``, ``weight varied, bias 0``, ``no affine``."""
    affine: str = ""
    """What became of them: ``kept``, or ``not kept: ...`` / ``partly kept: ...`` saying why."""
    settings: str = ""
    """The replacement's own settings as torch prints them (``3, 6, eps=1e-05, ...``: a GroupNorm's groups
    and channels), so a plan shows what each target is, not only its type."""


@dataclass
class SwapReport:
    """What :func:`swap_norms` did to a model, layer by layer."""

    target: str
    records: list[SwapRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_swapped(self) -> int:
        return len(self.records)

    @property
    def params_before(self) -> int:
        return sum(r.params_before for r in self.records)

    @property
    def params_after(self) -> int:
        return sum(r.params_after for r in self.records)

    @property
    def param_delta(self) -> int:
        """Change in the model's parameter count caused by the swap."""
        return self.params_after - self.params_before

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the summary numbers, every record and the notes."""
        return {
            "target": self.target,
            "n_swapped": self.n_swapped,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "param_delta": self.param_delta,
            "records": [asdict(r) for r in self.records],
            "notes": list(self.notes),
        }


def _placed_like(module: nn.Module, bn: nn.Module) -> nn.Module:
    """``module`` on ``bn``'s device, in its floating dtype and train/eval mode."""
    tensors = itertools.chain(bn.parameters(recurse=False), bn.buffers(recurse=False))
    ref = next((t for t in tensors if t.is_floating_point()), None)
    if ref is not None:
        module.to(device=ref.device, dtype=ref.dtype)
    return module.train(bn.training)


def _replacement(model: nn.Module, path: str, bn: nn.Module, spec: TargetSpec, how: Target,
                 plan: FoldPlan | None) -> tuple[nn.Module, int, str]:
    """The new norm for the BatchNorm at ``path``, parameters added elsewhere, and a note."""
    if plan is not None and path in plan.producers:
        producer = plan.producers[path]
        added = fold_into(model.get_submodule(producer), bn)
        # nn.Identity may hand on its input here: only this layer reads the producer's output
        return nn.Identity(), added, f"folded into {producer}" + (f" (bias added: +{added})" if added else "")
    try:
        norm = how.build(bn, spec.arg)
    except BnprobeError as exc:
        raise BnprobeError(f"layer {path}: {exc}") from None
    return norm, 0, f"fell back to frozen: {plan.reasons[path]}" if plan is not None else ""


def _add_bias(model: nn.Module, path: str, bn: nn.Module, norm: nn.Module,
              plan: FoldPlan) -> tuple[nn.Module, int, str]:
    """``+bias`` for the BatchNorm at ``path``: the norm to use, parameters added, and a note.

    The producing layer gets a zero bias where it has none; with no producing layer the norm becomes a
    :class:`ChannelBias` (``+bias`` is only for ``identity``, so ``norm`` adds nothing of its own).
    """
    producer = plan.producers.get(path)
    if producer is None:
        return ChannelBias(num_channels(bn)), 0, f"bias module added: {plan.reasons[path]}"
    layer = model.get_submodule(producer)
    if layer.bias is not None:
        return norm, 0, f"{producer} already has a bias"
    layer.bias = nn.Parameter(torch.zeros(num_channels(bn), device=layer.weight.device, dtype=layer.weight.dtype),
                              requires_grad=layer.weight.requires_grad)
    return norm, layer.bias.numel(), f"bias added to {producer} (+{layer.bias.numel()})"


def _bias_note(records: list[SwapRecord]) -> str:
    in_layers = [r for r in records if r.note.startswith("bias added to")]
    modules = [r for r in records if r.note.startswith("bias module added")]
    added = sum(r.params_after for r in in_layers + modules)
    return (f"bias: zero-initialised biases added to {len(in_layers)} producing layers and {len(modules)} "
            f"ChannelBias modules (+{added:,} parameters)")


def _affine_kept(bn: nn.Module, norm: nn.Module, spec: TargetSpec, how: Target) -> str:
    """What became of ``bn``'s weight and bias in ``norm``, copying them over where the target says to."""
    if how.affine == "copy":
        return take_over(bn, norm)
    return KEPT if how.affine == "derived" else f"not kept: {spec.name} has none"


def swap_norms(model: nn.Module, target: str | NormFactory) -> tuple[nn.Module, SwapReport]:
    """A deep copy of ``model`` with every BatchNorm replaced as ``target`` says, and what was done.

    ``target`` is ``NAME[:ARG][+bias][+skipinit]`` with ``NAME`` from :func:`list_targets`, or a module
    class or factory called with each layer's channel count (``functools.partial(nn.GroupNorm, 4)``), as
    timm's ``get_norm_layer`` takes one.  The replacements start from the BatchNorms' weight and bias
    (the model's initialisation convention), as far as they have their own.  The input model is never
    modified.  Raises :class:`NoBatchNormError` when the model has no BatchNorm, and
    :class:`UnknownNameError` / :class:`BnprobeError` for a bad target or a ``groupnorm:G`` that does not
    divide a layer's channels.
    """
    spec, how = resolve_target(target)
    require_batchnorm(model)
    model = copy.deepcopy(model)
    batchnorms = find_batchnorms(model)
    folding = isinstance(target, str) and spec.name == "fold"
    plan = fold_plan(model, [p for p, _ in batchnorms]) if folding or spec.bias else None
    fold = plan if folding else None
    report = SwapReport(target=str(spec), notes=[fold.summary()] if fold is not None else [])
    inits = {path: describe_affine(bn) for path, bn in batchnorms}
    unzeroed = unzero_branch_norms(model, batchnorms) if spec.skipinit and how.affine != "none" else []
    for path, bn in batchnorms:
        norm, added, note = _replacement(model, path, bn, spec, how, fold)
        affine = _affine_kept(bn, norm, spec, how) + (", weight taken as 1 for skipinit" if path in unzeroed else "")
        if spec.bias:
            norm, added, note = _add_bias(model, path, bn, norm, plan)
        norm = _placed_like(norm, bn)
        act, drop = getattr(bn, "act", None), getattr(bn, "drop", None)
        new: nn.Module = norm
        if act is not None or drop is not None:
            new = NormAct(norm, nn.Identity() if drop is None else drop, nn.Identity() if act is None else act)
            new.training = bn.training
        if path:
            model.set_submodule(path, new)
        else:
            model = new
        report.records.append(SwapRecord(
            path=path, old_type=type(bn).__name__, new_type=type(norm).__name__,
            params_before=own_params(bn), params_after=own_params(norm) + added,
            activation=None if act is None or isinstance(act, nn.Identity) else type(act).__name__,
            note=note, affine_init=inits[path], affine=affine, settings=norm.extra_repr(),
        ))
    report.notes += affine_notes([(r.affine, r.affine_init) for r in report.records], spec.skipinit)
    if spec.bias:
        report.notes.append(_bias_note(report.records) + (f" ({plan.trace_error})" if plan.trace_error else ""))
    if unzeroed:
        report.notes.append(unzero_note(unzeroed))
    if spec.skipinit:
        report.notes.append(skipinit_note(model, apply_skipinit(model)))
    return model, report


def make_variant(model: nn.Module, variant: str | NormFactory) -> tuple[nn.Module, SwapReport]:
    """A fresh copy of ``model`` for one variant of a study.

    ``"bn"`` is the unchanged reference (a deep copy, empty report); any other name, or a module class
    or factory, is a target for :func:`swap_norms`.  Every variant is a deep copy taken before the swap,
    so all variants of one model start from the same conv and linear weights.  A model without BatchNorm
    is refused for every variant, ``bn`` included, since there would be nothing to compare.
    """
    if not isinstance(variant, str) or variant.strip().lower() != REFERENCE_VARIANT:
        return swap_norms(model, variant)
    require_batchnorm(model)
    return copy.deepcopy(model), SwapReport(target=REFERENCE_VARIANT)
