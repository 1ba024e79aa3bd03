"""Training checkpoints: everything one run needs to continue after Ctrl-C or a kill.

A study keeps one file per run, ``OUT/checkpoints/<variant>-seed<k>.pt`` (:func:`checkpoint_path`),
rewritten after every epoch by :func:`save_atomic` -- a temporary file in the same folder, then
``os.replace`` -- so a kill leaves the previous epoch's file or the new one, never half of one.  It
holds plain containers and tensors only, and is read back with ``weights_only=True``::

    {"format": "bnprobe-train-state", "version": 1,
     "epoch": epochs completed, "diverged_at_epoch": None or the epoch, "history": [per-epoch metrics],
     "config": the TrainConfig as a dict,
     "model": state_dict, "optimizer": ..., "schedule": ..., "scaler": ...,
     "rng": [per process: {"order": data-order generator, "augment": augmentation generator,
                           "torch": global CPU generator, "cuda": the GPU's generator (CUDA only)}],
     "recalibrated_bn": whether the BatchNorm statistics were recomputed after training (absent: no)}

The weights sit under ``"model"``, a key :func:`bnprobe.models.load_checkpoint` looks in, so a
finished run's checkpoint can also seed another study.

**What a finished run keeps** (:data:`bnprobe._common.CHECKPOINT_MODES`, a study's ``checkpoints`` setting).  While a
run trains its file holds the whole state above, which ``--resume`` needs.  Once the study has filed
the run, ``resume`` keeps that file as it is; ``final`` rewrites it with :func:`keep_final_weights` --
the same layout without ``optimizer``, ``schedule``, ``scaler`` and ``rng`` (a third of the bytes
under AdamW, whose two moment buffers are each as large as the weights) -- which still gives the
weights to ``bnprobe probe``, to a resumed study's ``bn`` reference and to ``--checkpoint``, but
cannot continue training; ``none`` removes the study's files once the study is done.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from bnprobe._common import safe_filename, write_atomic
from bnprobe._hints import setting
from bnprobe.errors import BnprobeError
from bnprobe.models._weights import read_torch_file

FORMAT = "bnprobe-train-state"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
TRAINING_KEYS = ("optimizer", "schedule", "scaler", "rng")
"""The parts of a train state that only continuing the training needs (dropped by :func:`keep_final_weights`)."""


def checkpoint_path(out_dir: str | Path, variant: str, seed: int) -> Path:
    """``OUT/checkpoints/<variant>-seed<seed>.pt``, with characters unsafe in file names replaced."""
    return Path(out_dir) / CHECKPOINT_DIR / f"{run_stem(variant, seed)}.pt"


def run_stem(variant: str, seed: int) -> str:
    """``<variant>-seed<seed>`` with characters unsafe in file names (``:`` of ``groupnorm:8``) replaced."""
    return f"{safe_filename(variant)}-seed{seed}"


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` so readers see the old file or the new one, never half."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def load_train_state(path: str | Path) -> dict:
    """The training state saved at ``path`` (on the CPU); a one-line error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise BnprobeError(f"checkpoint {path} not found; was the study run with this {setting('out')}?")
    state = read_torch_file(path, fix="delete it to train that run again")
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise BnprobeError(f"{path} is not a bnprobe training checkpoint")
    if state.get("version") != VERSION:
        raise BnprobeError(f"checkpoint {path} has version {state.get('version')!r}, this bnprobe reads {VERSION}; "
                           "delete it to train that run again")
    return dict(state)


def can_continue(state: Mapping) -> bool:
    """Whether a train state holds what continuing its training needs (not only the final weights)."""
    return all(key in state for key in TRAINING_KEYS)


def keep_final_weights(path: str | Path) -> None:
    """Rewrite the finished run's checkpoint at ``path`` without what only further training needs.

    Epoch, history, config and weights stay, the weights at full precision; the tensors of each dtype
    are stored as views of one buffer, so the file holds one record per dtype rather than one per
    tensor (what ``torch.load`` gives back is the same ``state_dict``).  A file already kept so is
    left as it is.
    """
    state = load_train_state(path)
    if can_continue(state):
        kept = {key: value for key, value in state.items() if key not in TRAINING_KEYS}
        save_atomic({**kept, "model": _packed(state["model"])}, path)


def _packed(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors, in the same order, as views of one contiguous buffer per dtype."""
    by_dtype: dict[torch.dtype, list[str]] = {}
    for name, tensor in state_dict.items():
        by_dtype.setdefault(tensor.dtype, []).append(name)
    packed: dict[str, torch.Tensor] = {}
    for names in by_dtype.values():
        buffer = torch.cat([state_dict[name].reshape(-1) for name in names])
        for name, piece in zip(names, buffer.split([state_dict[name].numel() for name in names]), strict=True):
            packed[name] = piece.view(state_dict[name].shape)
    return {name: packed[name] for name in state_dict}


def config_differences(saved: Mapping, current: Mapping, ignore: tuple[str, ...] = (),
                       prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every field (dotted, e.g. ``train.lr``) whose value differs, as ``(field, saved value, current value)``.

    Nested mappings are compared field by field, in ``current``'s order and then the fields only
    ``saved`` has; a missing field's value is ``"<missing>"``; fields named in ``ignore`` (dotted) are skipped.
    """
    for key in list(current) + [k for k in saved if k not in current]:
        name = f"{prefix}{key}"
        if name in ignore:
            continue
        old, new = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            yield from config_differences(old, new, ignore, prefix=f"{name}.")
        elif _plain(old) != _plain(new):
            yield name, _plain(old), _plain(new)


def first_difference(saved: Mapping, current: Mapping, ignore: tuple[str, ...] = ()) -> str | None:
    """The first of :func:`config_differences`, as ``field is saved there and current now``; None if none."""
    for name, old, new in config_differences(saved, current, ignore):
        return f"{name} is {old!r} there and {new!r} now"
    return None


def _plain(value: Any) -> Any:
    """Tuples as lists, so a value compares equal to itself after a JSON round trip."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value
