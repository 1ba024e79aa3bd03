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
                           "torch": global CPU generator, "cuda": the GPU's generator (CUDA only)}]}

The weights sit under ``"model"``, a key :func:`bnprobe.checkpoint.load_checkpoint` looks in, so a
finished run's checkpoint can also seed another study.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from bnprobe.errors import BnprobeError
from bnprobe.results import write_atomic

FORMAT = "bnprobe-train-state"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"


def checkpoint_path(out_dir: str | Path, variant: str, seed: int) -> Path:
    """``OUT/checkpoints/<variant>-seed<seed>.pt``, with characters unsafe in file names replaced."""
    return Path(out_dir) / CHECKPOINT_DIR / f"{run_stem(variant, seed)}.pt"


def run_stem(variant: str, seed: int) -> str:
    """``<variant>-seed<seed>`` with characters unsafe in file names (``:`` of ``groupnorm:8``) replaced."""
    return f"{re.sub(r'[^A-Za-z0-9_.+=-]', '_', variant)}-seed{seed}"


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` so readers see the old file or the new one, never half."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def load_train_state(path: str | Path) -> dict:
    """The training state saved at ``path`` (on the CPU); a one-line error if it is not one."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BnprobeError(f"checkpoint {path} not found; was the study run with this --out?") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise BnprobeError(f"cannot read checkpoint {path} ({str(exc).partition(chr(10))[0]}); "
                           "delete it to train that run again") from None
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise BnprobeError(f"{path} is not a bnprobe training checkpoint")
    if state.get("version") != VERSION:
        raise BnprobeError(f"checkpoint {path} has version {state.get('version')!r}, this bnprobe reads {VERSION}; "
                           "delete it to train that run again")
    return dict(state)


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
