"""Loading trained weights into a model before surgery.

``fold`` and ``frozen`` only mean something on a model whose BatchNorm statistics were learnt, so a
study may start from a checkpoint: a plain ``state_dict`` or a timm training checkpoint (a dict holding
the weights under ``state_dict``, ``model`` or ``state_dict_ema``, next to the optimizer state and the
training ``args``).  Keys saved from ``DataParallel``/``DistributedDataParallel`` carry a ``module.``
prefix, which is stripped.  Only tensors and plain containers are unpickled (``weights_only``); timm's
``argparse.Namespace`` of training arguments is allowed too.  :func:`load_state` loads bnprobe's own
checkpoints (a resumed run, a re-probed study) with one error line in the caller's words.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from bnprobe._common import first_line
from bnprobe.errors import BnprobeError

#: Where a checkpoint dict may keep the weights, in the order they are looked for (EMA weights last).
STATE_DICT_KEYS = ("state_dict", "model", "state_dict_ema")


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load the weights at ``path`` into ``model`` in place.

    The checkpoint must fit exactly: otherwise :class:`BnprobeError` names the first parameter whose
    shape differs (with both shapes), or the first key missing from the checkpoint or unknown to the
    model, and ``model`` is left untouched.
    """
    where = f"checkpoint {os.fspath(path)} does not fit {type(model).__name__}"
    model.load_state_dict(fitted_state(read_state_dict(path), model.state_dict(), where))


def fitted_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], where: str, *,
                 holder: tuple[str, str] = ("the checkpoint", "the checkpoint has"),
                 own: str | None = None) -> dict[str, torch.Tensor]:
    """``state`` checked to fit a model whose ``state_dict()`` is ``expected``, ready to load.

    Every key must be in both with the same shape, or :class:`BnprobeError` says ``where``: and names the
    first key missing, of another shape, or unknown to the model.  ``holder`` names the weights in those
    messages (``"the checkpoint"``, and how it "has" a key).  Tensors under the module ``own`` whose shape
    differs are not a misfit: the model keeps its own there (a classifier for other classes).
    """
    name, has = holder
    fitted = {}
    for key, tensor in expected.items():
        given = state.get(key)
        if given is None:
            raise BnprobeError(f"{where}: key {key} is missing from {name}")
        if tuple(given.shape) == tuple(tensor.shape):
            fitted[key] = given
        elif own is not None and key.startswith(f"{own}."):
            fitted[key] = tensor
        else:
            raise BnprobeError(f"{where}: {key} has shape {tuple(given.shape)} in {name} "
                               f"but {tuple(tensor.shape)} in the model")
    unexpected = next((k for k in state if k not in expected), None)
    if unexpected is not None:
        raise BnprobeError(f"{where}: {has} key {unexpected}, which the model does not")
    return fitted


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], message: str) -> None:
    """Load ``state`` into ``model`` with ``load_state_dict``, or raise one :class:`BnprobeError` line.

    When the weights do not fit, the error is ``message`` with ``{why}`` replaced by the first line of
    torch's (which names the first mismatch); ``message`` says whose weights they are and what to do.
    Only ``{why}`` is replaced, so a path with braces in ``message`` is kept as it is.  The one wrapper
    for loading bnprobe's own checkpoints (a resumed run, a re-probed study).
    """
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BnprobeError(message.replace("{why}", first_line(exc))) from None


def read_torch_file(path: str | os.PathLike, *, fix: str, allowed: Sequence[type] = ()) -> Any:
    """What ``torch.save`` stored at ``path``, loaded on the CPU with ``weights_only`` (and ``allowed`` classes).

    Whatever ``torch.load`` raises on a file that is not a checkpoint -- the unpickler's ``IndexError``,
    ``KeyError`` or ``UnpicklingError`` on junk, a zip error, ``EOFError`` on an empty file -- becomes
    one :class:`BnprobeError` line, ``cannot read checkpoint PATH (why); FIX``.  The one place that
    reads torch files, for :func:`load_checkpoint` and :func:`bnprobe.train.load_train_state`.
    """
    try:
        with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch's note on a plain pickle
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure on a file that is not a checkpoint is bad input
        raise BnprobeError(f"cannot read checkpoint {os.fspath(path)} ({_load_failure(exc)}); {fix}") from None


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load`` failed, in a few words (not its advice to unpickle untrusted code)."""
    if isinstance(exc, EOFError) or "central directory" in str(exc):
        return "the file is empty or cut short"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "not a torch.save file of tensors"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` weights stored at ``path`` (a torch file, or a ``.safetensors`` one),
    without a ``module.`` prefix."""
    if not os.path.isfile(path):
        raise BnprobeError(f"checkpoint {os.fspath(path)} not found")
    if os.fspath(path).endswith(".safetensors"):
        obj = _read_safetensors(path)
    else:
        obj = read_torch_file(path, fix="give a file saved with torch.save(model.state_dict(), ...)",
                              allowed=[argparse.Namespace])
    if isinstance(obj, Mapping):
        obj = next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)), obj)
    if not (isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise BnprobeError(f"checkpoint {os.fspath(path)} holds no state_dict: expected a dict of tensors, "
                           f"or one under {', '.join(STATE_DICT_KEYS)}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(os.fspath(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise BnprobeError(f"cannot read safetensors file {os.fspath(path)} ({first_line(exc)}); "
                           "give a file written by safetensors.torch.save_file") from None
