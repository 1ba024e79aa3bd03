"""Hidden activations out of any model, in bounded memory.

:func:`capture` runs the model once over the probed samples (eval mode, no grad) with forward hooks
on the selected modules.  Each hook call is handled the moment the module returns, before any later
operation can modify the tensor in place:

* streaming probes (``needs="stream"``) get the batch through their accumulators, so their numbers
  need O(channels + samples) memory whatever the layer size;
* when per-sample vectors are wanted, the batch is reduced by the ``spatial`` rule and copied out.
  Vectors are kept in memory when every layer's vectors together fit in ``max_memory`` bytes, and
  otherwise written sequentially to one ``.npy`` file per layer under ``cache_dir`` and handed to
  probes memory-mapped, one layer at a time.

Spatial rules (a per-sample vector from a ``(C, H, W)`` activation):

* ``flatten`` -- all ``C*H*W`` values (what the paper probes; the default);
* ``channel_mean`` -- global average pooling to ``C`` values;
* ``pool:K`` -- adaptive average pooling to ``K x K`` per channel, ``C*K*K`` values.

A module called several times in one forward (torchvision's ResNet reuses one ``relu`` per block)
gives one layer per call, named ``path#0``, ``path#1``, ... in call order.  The model leaves capture
as it came: hooks removed, training flags, ``requires_grad`` and device restored, also on error.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bnprobe.activations import is_activation, is_gate
from bnprobe.errors import BnprobeError
from bnprobe.probes.base import LayerData, Probe

DEFAULT_MAX_MEMORY = 2 * 1024**3
LAYER_KINDS = ("act", "conv", "norm")


@dataclass
class CaptureResult:
    """The captured layers of one model, in forward order."""

    layers: list[LayerData]
    labels: np.ndarray
    modules: dict[str, nn.Module] = field(default_factory=dict)
    cache_dir: Path | None = None

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def __getitem__(self, name: str) -> LayerData:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.layers)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) or \
        "Norm" in type(module).__name__ and not any(True for _ in module.children())


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd)


_KIND_TESTS = {
    "act": lambda m: is_activation(m) and not is_gate(m),
    "conv": _is_conv,
    "norm": _is_norm,
}


def select_modules(model: nn.Module, layers: str | Sequence[str] = "act") -> list[tuple[str, nn.Module]]:
    """Modules chosen by kind (``act``, ``conv``, ``norm``) and/or glob patterns on their paths.

    ``layers`` is a comma list or a sequence; kinds are unions, globs narrow to matching paths
    (``"layer3.*"`` alone means activations under ``layer3``; ``"conv,layer3.*"`` convs there).
    """
    tokens = [t.strip() for t in (layers.split(",") if isinstance(layers, str) else layers) if t.strip()]
    kinds = [t for t in tokens if t in LAYER_KINDS] or ["act"]
    globs = [t for t in tokens if t not in LAYER_KINDS]
    chosen = []
    for name, module in model.named_modules():
        if not name or not any(_KIND_TESTS[k](module) for k in kinds):
            continue
        if globs and not any(fnmatch(name, g) for g in globs):
            continue
        chosen.append((name, module))
    return chosen


def reduce_spatial(activations: torch.Tensor, spatial: str) -> torch.Tensor:
    """``(B, C, *spatial)`` -> ``(B, features)`` by the rule named in the module docstring."""
    if activations.dim() <= 2 or spatial == "flatten":
        return activations.reshape(activations.shape[0], -1)
    if spatial == "channel_mean":
        return activations.flatten(2).mean(dim=2)
    k = _pool_size(spatial)
    if activations.dim() != 4:
        raise BnprobeError(f"spatial rule {spatial} needs 2-D feature maps; got shape {tuple(activations.shape)}")
    return nn.functional.adaptive_avg_pool2d(activations, k).flatten(1)


def _pool_size(spatial: str) -> int:
    match = re.fullmatch(r"pool:(\d+)", spatial)
    if not match or int(match.group(1)) < 1:
        raise BnprobeError(f"unknown spatial rule {spatial!r}; use flatten, channel_mean or pool:K (K >= 1)")
    return int(match.group(1))


def check_spatial(spatial: str) -> str:
    """Validate a spatial rule name early, before any forward pass."""
    if spatial not in ("flatten", "channel_mean"):
        _pool_size(spatial)
    return spatial


class _VectorStore:
    """Rows of one layer's vectors, filled in order, in memory or in a sequentially written .npy."""

    def __init__(self, rows: int, dim: int, dtype: np.dtype, path: Path | None) -> None:
        self.rows, self.dim, self.dtype, self.path = rows, dim, np.dtype(dtype), path
        self.filled = 0
        if path is None:
            self.array: np.ndarray | None = np.empty((rows, dim), dtype=self.dtype)
            self.file = None
        else:
            self.array = None
            self.file = open(path, "wb")  # noqa: SIM115 - closed in finish()
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (rows, dim)}
            np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, block: torch.Tensor) -> None:
        block = block[: self.rows - self.filled]
        values = block.detach().to("cpu", torch.float32).numpy().astype(self.dtype, copy=False)
        if self.array is not None:
            self.array[self.filled:self.filled + len(values)] = values
        else:
            self.file.write(np.ascontiguousarray(values).tobytes())
        self.filled += len(values)

    def finish(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def load(self) -> np.ndarray:
        if self.array is not None:
            return self.array
        return np.load(self.path, mmap_mode="r")


@dataclass
class _Entry:
    path: str
    call: int
    shape: tuple[int, ...]
    accumulators: dict = field(default_factory=dict)
    store: _VectorStore | None = None


def _batches(data, samples: int | None, batch_size: int) -> tuple[Iterator, int]:
    """Normalise the accepted inputs to an iterator of ``(x, y)`` batches and the sample count."""
    if hasattr(data, "x") and hasattr(data, "y"):
        data = (data.x, data.y)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        n = len(x) if samples is None else min(samples, len(x))
        return ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)), n
    if isinstance(data, Iterable):
        try:
            total = len(data.dataset)  # a DataLoader
        except (AttributeError, TypeError):
            raise BnprobeError("capture needs (inputs, labels) tensors or a DataLoader over a sized "
                               "dataset, so it knows how many samples to expect") from None
        n = total if samples is None else min(samples, total)
        return (tuple(b[:2]) for b in data), n
    raise BnprobeError(f"capture cannot read data of type {type(data).__name__}; "
                       "pass (inputs, labels) tensors or a DataLoader")


def capture(
    model: nn.Module,
    data,
    *,
    layers: str | Sequence[str] = "act",
    samples: int | None = None,
    probes: Sequence[Probe] = (),
    vectors: bool | None = None,
    spatial: str = "flatten",
    dtype: str = "float32",
    max_memory: int | None = DEFAULT_MAX_MEMORY,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> CaptureResult:
    """Capture the selected layers' activations of ``model`` on the first ``samples`` of ``data``.

    ``data`` is ``(inputs, labels)`` tensors, a :class:`bnprobe.data.Split`, or a DataLoader of
    ``(inputs, labels)`` batches.  ``vectors`` defaults to whether any probe needs them (or to True
    when no probe is given).  See the module docstring for ``spatial``, ``max_memory``, ``cache_dir``.
    """
    check_spatial(spatial)
    if dtype not in ("float32", "float16"):
        raise BnprobeError(f"capture dtype must be float32 or float16, got {dtype!r}")
    stream_probes = [p for p in probes if p.needs == "stream"]
    if vectors is None:
        vectors = not probes or any(p.needs in ("vectors", "model") for p in probes)
    selected = select_modules(model, layers)
    if not selected:
        raise BnprobeError(f"no module matches layers={layers!r}; kinds are {', '.join(LAYER_KINDS)}, "
                           "or give a glob on module names such as 'layer3.*'")
    batches, n = _batches(data, samples, batch_size)
    if n == 0:
        raise BnprobeError("capture got no samples")
    first = next(batches)

    param_device = next(iter(model.parameters()), torch.empty(0)).device
    run_device = torch.device(device) if device is not None else param_device
    saved_training = {m: m.training for m in model.modules()}
    saved_grad = {p: p.requires_grad for p in model.parameters()}
    entries: dict[tuple[str, int], _Entry] = {}
    calls: dict[str, int] = {}
    labels_seen: list[torch.Tensor] = []
    current_labels: list[torch.Tensor] = []
    writing = [False]

    def make_hook(path: str):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not isinstance(out, torch.Tensor):
                return
            k = calls.get(path, 0)
            calls[path] = k + 1
            key = (path, k)
            if not writing[0]:
                entries[key] = _Entry(path, k, tuple(out.shape[1:]))
                return
            entry = entries.get(key)
            if entry is None:
                raise BnprobeError(f"layer {path} was called more often in a later batch than in the first; "
                                   "capture needs the same forward path for every batch")
            act = out.detach()
            for acc in entry.accumulators.values():
                acc.update(act, current_labels[0])
            if entry.store is not None:
                entry.store.write(reduce_spatial(act, spatial))
        return hook

    handles = [m.register_forward_hook(make_hook(path)) for path, m in selected]
    stores: list[_VectorStore] = []
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if run_device != param_device:
            model.to(run_device)
        with torch.no_grad():
            model(first[0][:1].to(run_device))  # discover layer order, call counts and shapes
            calls.clear()
            cache = _set_up_stores(entries, n, vectors, spatial, dtype, max_memory, cache_dir, stores)
            for key, entry in entries.items():
                entry.accumulators = {p.key: p.accumulator(_layer_name(key, entries), entry.shape)
                                      for p in stream_probes}
            writing[0] = True
            seen = 0
            for x, y in _chain(first, batches):
                if seen >= n:
                    break
                x, y = x[: n - seen], y[: n - seen]
                current_labels[:] = [y.to(run_device)]
                calls.clear()
                model(x.to(run_device))
                labels_seen.append(y.cpu())
                seen += len(y)
    finally:
        for h in handles:
            h.remove()
        for s in stores:
            s.finish()
        if run_device != param_device:
            model.to(param_device)
        for m, flag in saved_training.items():
            m.train(flag)
        for p, flag in saved_grad.items():
            p.requires_grad_(flag)

    labels = torch.cat(labels_seen).numpy()
    modules = dict(selected)
    layer_data = []
    for key, entry in entries.items():
        name = _layer_name(key, entries)
        store = entry.store
        layer_data.append(LayerData(name=name, shape=entry.shape, labels=labels,
                                    accumulators=entry.accumulators,
                                    load_vectors=store.load if store is not None else None))
    return CaptureResult(layer_data, labels, {_layer_name(k, entries): modules[k[0]] for k in entries}, cache)


def _chain(first, rest):
    yield first
    yield from rest


def _layer_name(key: tuple[str, int], entries: dict[tuple[str, int], _Entry]) -> str:
    path, call = key
    repeated = (path, 1) in entries
    return f"{path}#{call}" if repeated else path


def _set_up_stores(entries, n, vectors, spatial, dtype, max_memory, cache_dir, stores) -> Path | None:
    if not vectors:
        return None
    dims = {key: _vector_dim(entry.shape, spatial) for key, entry in entries.items()}
    itemsize = np.dtype(dtype).itemsize
    total = n * sum(dims.values()) * itemsize
    cache = None
    if max_memory is not None and total > max_memory:
        cache = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="bnprobe-capture-"))
        cache.mkdir(parents=True, exist_ok=True)
    for key, entry in entries.items():
        path = None
        if cache is not None:
            safe = re.sub(r"[^A-Za-z0-9_.#-]", "_", _layer_name(key, entries))
            path = cache / f"{safe}.npy"
        entry.store = _VectorStore(n, dims[key], np.dtype(dtype), path)
        stores.append(entry.store)
    return cache


def _vector_dim(shape: tuple[int, ...], spatial: str) -> int:
    if len(shape) <= 1 or spatial == "flatten":
        return int(np.prod(shape))
    if spatial == "channel_mean":
        return int(shape[0])
    return int(shape[0]) * _pool_size(spatial) ** 2
