"""Published (pretrained) weights, found on this machine and never downloaded.

``--pretrained`` starts a study from the weights a model name is published with: timm's (a model
name with an optional tag, ``resnet18.a1_in1k``, or an ``hf-hub:timm/...`` name) or torchvision's
(``tv:NAME``, its ``DEFAULT`` weights).  They are looked up in the local caches only -- the Hugging Face
hub cache and torch hub's ``checkpoints/`` folder -- so a study never reaches the network; a name whose
weights are not there fails in one line that says where it looked.  ``--pretrained FILE`` gives the
same weights as a file (a ``state_dict`` of the model as published, or a safetensors file).

The weights are adapted to the dataset the way their library adapts them: a classifier for other
classes is left freshly initialised, and timm sums or repeats the first convolution's filters for other
input channels (torchvision models always take 3 channels; the data is adapted instead).  Weights
already shaped for the dataset -- a model trained here or elsewhere on it -- go in through
``--init-weights`` instead, which must fit exactly.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from bnprobe._common import first_line
from bnprobe._hints import option
from bnprobe.errors import BnprobeError
from bnprobe.models._weights import fitted_state, read_state_dict, read_torch_file

HF_HUB_PREFIX = "hf-hub:"
FILE_HINT = "give a state_dict saved with torch.save(model.state_dict(), ...), or a safetensors file"
WEIGHTS_FILE = "a state_dict saved with torch.save(model.state_dict(), FILE), or a safetensors file named *.safetensors"
"""What ``--pretrained FILE`` reads, in the words of its errors."""
TIMM_LOADER_LOGGER = "timm.models._builder"
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""The files of a hub repository timm reads weights from, in the order it tries them."""


def fetch_hint(name: str) -> str:
    """How to get timm's published weights for ``name`` onto a machine that cannot download them."""
    return ("download them once where there is a network (e.g. python -c \"import timm; "
            f"timm.create_model('{name}', pretrained=True)\"), or give the file: {option('pretrained', 'FILE')}")


def create_timm_pretrained(name: str, weights: bool | str, **kwargs) -> nn.Module:
    """timm's ``name`` with its published weights (``weights=True``, from the local cache) or those in
    the file ``weights``, adapted to ``num_classes`` and ``in_chans`` by timm."""
    import timm

    if name.startswith(HF_HUB_PREFIX):
        if weights is not True:
            raise BnprobeError(f"{option('pretrained', 'FILE')} takes a timm model name, not {name}, whose weights "
                               "come from "
                               "the hub cache; give the architecture's name (resnet18.a1_in1k) with the file")
        _hub_file(name[len(HF_HUB_PREFIX):], ("config.json",), name)
        _hub_file(name[len(HF_HUB_PREFIX):], HF_WEIGHT_FILES, name)
        overlay = None  # timm reads them from the hub cache itself (offline when HF_HUB_OFFLINE is set)
    else:
        path = cached_timm_weights(name) if weights is True else _existing_file(weights)
        overlay = {"file": os.fspath(path)}
    try:
        with _timm_load_notes() as notes, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch's note on a plain pickle
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as exc:
        if weights is not True:
            read_weights_file(path)  # a file that is no checkpoint fails here, in words, not as timm's KeyError(101)
        if not isinstance(exc, RuntimeError):  # an unreadable file, a hub read that failed
            fix = fetch_hint(name) if weights is True else FILE_HINT
            raise BnprobeError(f"cannot load pretrained weights for {name} ({first_line(exc)}); {fix}") from None
        # load_state_dict's mismatch, or timm's "no pretrained weights"
        raise BnprobeError(f"pretrained weights for {name} do not fit it: {first_mismatch(exc)}") from None
    _check_timm_load(model, name, notes)
    return model


@contextmanager
def _timm_load_notes() -> Iterator[list[str]]:
    """What timm says while it loads pretrained weights, at INFO level and up.

    timm loads non-strictly once it drops a classifier for other classes, and only logs the keys it
    then left out; :func:`_check_timm_load` turns those notes into errors, so that weights that do not
    fit are never half loaded."""
    logger = logging.getLogger(TIMM_LOADER_LOGGER)
    notes: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield notes
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _check_timm_load(model: nn.Module, name: str, notes: list[str]) -> None:
    """Refuse a pretrained load that left out a tensor other than the classifier's, or read one the
    model does not have, naming the first such key."""
    head = classifier_name(model)
    for note in notes:
        listed = re.match(r"(Missing|Unexpected) keys \((.*?)\)", note)
        if note.startswith("Unable to convert pretrained"):
            raise BnprobeError(f"pretrained weights for {name} do not fit it: {note.split(',')[0]}")
        if listed is None:
            continue
        keys = [k for k in listed.group(2).split(", ") if head is None or not k.startswith(f"{head}.")]
        if keys and listed.group(1) == "Missing":
            raise BnprobeError(f"pretrained weights for {name} do not fit it: key {keys[0]} is missing from them")
        if keys:
            raise BnprobeError(f"pretrained weights for {name} do not fit it: they have key {keys[0]}, "
                               "which the model does not")


def cached_timm_weights(name: str) -> Path:
    """The local file holding the published weights of timm's ``name``, or a one-line error naming where
    it looked."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise BnprobeError(f"timm publishes no weights for {name}; list those that have some with "
                           "timm.list_models(pretrained=True), or start from scratch")
    if cfg.file:
        return _existing_file(cfg.file)
    looked = []
    if cfg.hf_hub_id:
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_WEIGHT_FILES
        found = _cached_hub_file(cfg.hf_hub_id, files)
        if found is not None:
            return found
        looked.append(_hub_repo_dir(cfg.hf_hub_id))
    if cfg.url:
        path = torch_hub_file(cfg.url)
        if path.is_file():
            return path
        looked.append(str(path))
    raise BnprobeError(f"no pretrained weights for {name} on this machine (looked in {' and '.join(looked)}); "
                       + fetch_hint(name))


def torchvision_pretrained_state(name: str, weights: bool | str) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of torchvision's ``name`` with its ``DEFAULT`` weights (``weights=True``, from
    torch hub's cache) or those in the file ``weights``."""
    if weights is not True:
        return read_weights_file(_existing_file(weights))
    import torchvision

    try:
        published = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        raise BnprobeError(f"torchvision publishes no weights for tv:{name}; start from scratch") from None
    path = torch_hub_file(published.url)
    if not path.is_file():
        raise BnprobeError(f"no pretrained weights for tv:{name} on this machine (looked for {path}); download "
                           f"them once where there is a network (torchvision.models.get_model('{name}', "
                           f"weights='DEFAULT')), or give the file: {option('pretrained', 'FILE')}")
    return read_state_dict(path)


def load_adapted(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Load published weights into ``model`` built for the dataset: every tensor must fit but those of
    the classifier, which stays freshly initialised when its shape is the dataset's, not the weights'."""
    model.load_state_dict(fitted_state(state, model.state_dict(), f"pretrained weights for {name} do not fit it",
                                       holder=("them", "they have"), own=classifier_name(model)))


def classifier_name(model: nn.Module) -> str | None:
    """The qualified name of the final classifier: timm's ``get_classifier()``, else the last ``nn.Linear``."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    modules = list(model.named_modules())
    if isinstance(head, nn.Module):
        return next((n for n, m in modules if m is head), None)
    return next((n for n, m in reversed(modules) if isinstance(m, nn.Linear)), None)


def first_mismatch(exc: BaseException) -> str:
    """The first mismatch in torch's ``load_state_dict`` error: the line after its heading, cut at the
    first key it lists (``Missing key(s) in state_dict: "fc.weight"``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else first_line(exc)
    head, sep, keys = detail.partition(": ")
    if sep and keys.startswith('"'):
        return f"{head}: {keys.split(', ')[0].rstrip('.')}"
    return detail


def torch_hub_file(url: str) -> Path:
    """Where torch hub keeps the file downloaded from ``url``: ``<torch hub dir>/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _hub_file(repo_id: str, files: tuple[str, ...], name: str) -> Path:
    found = _cached_hub_file(repo_id, files)
    if found is None:
        raise BnprobeError(f"no {' or '.join(files)} for {name} on this machine (looked in {_hub_repo_dir(repo_id)}); "
                           + fetch_hint(name))
    return found


def _cached_hub_file(repo_id: str, files: tuple[str, ...]) -> Path | None:
    """The first of ``files`` that the Hugging Face hub cache holds for ``repo_id`` (its main revision)."""
    from huggingface_hub import try_to_load_from_cache

    for filename in files:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def _hub_repo_dir(repo_id: str) -> str:
    from huggingface_hub import constants

    return os.path.join(constants.HF_HUB_CACHE, f"models--{repo_id.replace('/', '--')}")


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """The weights in the ``--pretrained`` file ``path``, or one line saying what the file holds instead of
    a checkpoint of weights, what is expected and what to do."""
    try:
        return read_state_dict(path)
    except BnprobeError:
        what, fix = _contents(path)
        if path.suffix == ".safetensors" and not what.startswith("a safetensors"):
            what = f"named *.safetensors, but {what}"
        raise BnprobeError(f"pretrained weights file {path} is not a torch checkpoint of weights: it is {what}; "
                           f"{option('pretrained', 'FILE')} takes {WEIGHTS_FILE}: {fix}") from None


def _contents(path: Path) -> tuple[str, str]:
    """What ``path``, no checkpoint of weights, holds as far as its first bytes and torch tell, and what to do."""
    save = "save the weights that way and give that file"
    with open(path, "rb") as file:
        head = file.read(64)
    size = path.stat().st_size
    if not head:
        return "empty", save
    if head.startswith(b"PK\x03\x04") or head[0] == 0x80:  # torch.save's zip archive, or its legacy pickle
        try:
            obj = read_torch_file(path, fix="", allowed=[argparse.Namespace])
        except BnprobeError as exc:
            if "cut short" in str(exc):
                return f"a torch.save file cut short ({size} bytes)", "save it again, or copy it over whole"
            if head[0] == 0x80:
                return "a pickle of objects other than tensors", save
            return ("a torch.save file of objects other than tensors (a whole model, from torch.save(model)?)"
                    if _is_torch_archive(path) else "a zip archive, not a torch.save one"), save
        return f"a torch.save file of a {type(obj).__name__} with no dict of tensors in it", save
    length = int.from_bytes(head[:8], "little")
    if size > 8 and head[8:9] == b"{" and length <= size - 8:  # safetensors: header length, then its JSON
        if path.suffix != ".safetensors":
            return "a safetensors file not named *.safetensors", "rename it to end in .safetensors"
        return "a safetensors file that safetensors cannot read", "write it again with safetensors.torch.save_file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        start = " ".join(text.split())[:32]
        return f"text ({size} bytes, starting {start!r})", save
    return f"{size} bytes of binary data, in neither torch.save's format nor safetensors'", save


def _is_torch_archive(path: Path) -> bool:
    """Whether the zip at ``path`` is laid out as torch.save writes one (``ARCHIVE/data.pkl``)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _existing_file(path: str | os.PathLike) -> Path:
    if not os.path.isfile(path):
        raise BnprobeError(f"pretrained weights file {os.fspath(path)} not found; {FILE_HINT}")
    return Path(path)
