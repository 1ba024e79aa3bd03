"""Constants and small mechanics that every stage of bnprobe shares.

This module sits below every stage (models, surgery, data, train, capture, probes, report, study,
reproduce, cli), so any of them may import it and it imports none of them.  It uses only the
standard library, never torch or numpy, so that code which must stay light (the command line's
option declarations) can read the constants too.

Each mechanic here was written once per module before; one definition keeps them from drifting
apart (a safe file name, the first line of an exception, a model's flags saved and restored).
"""

from __future__ import annotations

import importlib
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

REFERENCE_VARIANT = "bn"
"""The variant every other one is compared with: the model as built, BatchNorm and all."""

INIT_VARIANT = "init"
"""The untrained reference: seed by seed, the ``bn`` model with the starting weights every variant of that
seed starts from, evaluated, captured and probed as any run is (in eval mode) but trained for 0 epochs,
so that each probe's numbers before training stand beside the trained ones."""

DEFAULT_VARIANTS = (REFERENCE_VARIANT, "identity", "groupnorm")
"""The variants a study runs when none are named (``StudyConfig`` and ``bnprobe run --variants``)."""

CHECKPOINT_MODES = ("none", "final", "resume")
"""What a study keeps of a finished run's checkpoint: nothing, its final weights, or its whole train state
(:mod:`bnprobe.train._state`; here, so that the command line offers them without importing torch)."""

STUDY_MODES = ("scratch", "fine-tune", "probe-only")
"""How a study's runs come by their weights: trained from a fresh initialisation, trained from starting
weights (pretrained, ``init_weights``, a given module's), or not trained at all -- the variants of the
starting weights, or each run's own weights file, evaluated and probed as they are."""

HEADS = ("gap", "flatten")
"""Classifier heads of cnn4 (:class:`bnprobe.models.PlainCNN`): global average pooling, or the
flattened feature map (here, so that the command line offers them without importing torch)."""

MODEL_SCOPE_LAYER = "model"
"""The layer name under which a model-scope probe (one number per run, not per layer) records its numbers."""

SAFE_CHARS = "A-Za-z0-9_.+=#-"
"""The characters :func:`safe_filename` keeps, as a regular-expression class body (ASCII only)."""

_UNSAFE = re.compile(f"[^{SAFE_CHARS}]")


def default_mode(config: Mapping[str, Any]) -> str:
    """The mode a study (or a saved config without one) runs in when none is given: ``probe-only`` with
    per-run ``weights``, ``fine-tune`` with ``pretrained`` or ``init_weights``, else ``scratch``."""
    if config.get("weights"):
        return "probe-only"
    return "fine-tune" if config.get("pretrained") or config.get("init_weights") else "scratch"


def safe_filename(text: str, fill: str = "_") -> str:
    """``text`` with every character outside :data:`SAFE_CHARS` replaced by ``fill``.

    Variant names (``groupnorm:8``), layer names (``layer1.0#2``), probe specs (``hdbscan(dims=30)``)
    and model names (``timm/resnet18``) become file and folder names; one rule keeps them portable and
    lets a folder's owner recognise its files by :data:`SAFE_CHARS` alone.
    """
    return _UNSAFE.sub(fill, text)


def _first_line_of(text: str, last: bool) -> str:
    lines = text.strip().splitlines()
    return lines[-1 if last else 0].strip() if lines else ""


def first_line(exc_or_text: BaseException | str, *, last: bool = False) -> str:
    """The first (or, with ``last``, the last) line of an error message, for a one-line report.

    Surrounding whitespace is dropped.  An exception whose message is empty gives its type name and
    empty text gives ``""``, so a caller that quotes the reason never fails on an empty message.
    ``last`` suits messages that list attempts and end with the reason (torchvision's download
    errors name each mirror first).
    """
    line = _first_line_of(str(exc_or_text), last)
    if line or isinstance(exc_or_text, str):
        return line
    return type(exc_or_text).__name__


def describe(exc: BaseException, *, full: bool = False) -> str:
    """``"Type: first line of the message"`` (just ``"Type"`` when the message is empty).

    With ``full``, the whole message after the type name, as a probe failure is recorded in the
    results, where nothing of the error should be lost.
    """
    name = type(exc).__name__
    if full:
        return f"{name}: {exc}"
    line = _first_line_of(str(exc), last=False)
    return f"{name}: {line}" if line else name


@contextmanager
def preserved_flags(model: Any, *, training: bool | None = None, requires_grad: bool | None = None,
                    inplace: bool | None = None) -> Iterator[Any]:
    """Set a torch module's flags for the ``with`` block and restore each one as it was afterwards.

    ``training`` sets train/eval mode, ``requires_grad`` every parameter's flag and ``inplace`` every
    submodule's ``inplace`` attribute (ReLU and friends); None leaves that flag alone and does not
    touch it on exit either.  Every module and parameter gets back its own flag, so a model that came
    with some submodules frozen or in eval mode leaves that way, even when the block raises.  Only
    methods of the module are called, so this needs no torch import.
    """
    modules = list(model.modules())
    saved_training = {m: m.training for m in modules} if training is not None else {}
    saved_grad = {p: p.requires_grad for p in model.parameters()} if requires_grad is not None else {}
    saved_inplace = {m: m.inplace for m in modules if isinstance(getattr(m, "inplace", None), bool)} \
        if inplace is not None else {}
    try:
        if training is not None:
            model.train(training)
        for p in saved_grad:
            p.requires_grad_(requires_grad)
        for m in saved_inplace:
            m.inplace = inplace
        yield model
    finally:
        for m, flag in saved_training.items():
            m.train(flag)
        for p, flag in saved_grad.items():
            p.requires_grad_(flag)
        for m, flag in saved_inplace.items():
            m.inplace = flag


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None when it is missing, NaN or infinite (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file (0o666 less the umask), read once at import."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _new_file_mode()


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Within the block, an ``OSError`` names ``path``: the file the block writes, whatever it touched.

    A full disk's ENOSPC comes from ``write()``, which knows no file name, and a read-only folder's
    EROFS from the temporary file beside the target; either way the user should read the file they
    know, so the command line can say which one could not be written and why.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text as UTF-8, or bytes such as a PNG) so readers see the old
    file or the new one, never half of one.

    The file gets the permissions a plain ``open()`` would give it (the temporary file's are
    owner-only), so a study folder stays as readable as the rest of the user's files.  A write that
    fails (a full disk, a read-only folder) leaves the old file as it was and raises an ``OSError``
    naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with naming(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, _NEW_FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def optional_import(module: str, *, extra: str, needed_by: str) -> ModuleType:
    """``module``, an optional dependency, or a one-line :class:`~bnprobe.errors.MissingExtraError` saying
    which extra installs it (``pip install 'bnprobe[EXTRA]'``)."""
    from bnprobe.errors import MissingExtraError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{needed_by} needs {module}, which is not installed; install it with: "
                                f"pip install 'bnprobe[{extra}]'") from None
