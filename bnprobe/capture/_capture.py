"""Hidden activations out of any model, in bounded memory.

:func:`capture` runs the model over the probed samples (eval mode, no grad) with forward hooks on the
selected layers.  Each hook call is handled the moment the layer returns, before any later operation
can modify the tensor in place:

* streaming probes (``needs="stream"``) get the batch through their accumulators, so their numbers
  need O(channels + samples) memory whatever the layer size;
* when per-sample vectors are wanted, the batch is reduced by the ``spatial`` rule, converted to
  ``dtype`` on the model's device and copied into one store per layer (see
  :mod:`bnprobe.capture._vector_store`), in the first of three places that holds every layer's vectors
  together (:func:`plan_placement`):

  1. the run device, when it is a CUDA GPU and they fit in ``max_device_memory`` bytes (``"auto"``:
     half the device memory free when capture sets up its stores).  Copying there costs the device a
     few milliseconds where the host link would take seconds, and probes do their heavy linear
     algebra on the device anyway (:meth:`LayerData.vectors_tensor`);
  2. host memory, when they fit in ``max_memory`` bytes;
  3. one ``.npy`` file per layer under ``cache_dir``, written sequentially and handed to probes
     memory-mapped, one layer at a time.

  Whichever it is, the process holds one batch of activations at a time on top of the stored
  vectors, and host memory holds no vectors at all in the first and last case.

Layers (``layers``): a comma list or sequence of kinds -- ``act`` (activation modules and functional
activations, without sigmoid-like gates; the default), ``conv``, ``norm`` -- and glob patterns on layer
names (``"layer3.*"`` alone means the activations under ``layer3``; ``"conv,layer3.*"`` its convs).

Names: a module's path (``layer1.0.relu``).  A module called several times in one forward
(torchvision's ResNet reuses one ``relu`` per block) gives one layer per call, ``path#0``,
``path#1``, ... in call order.  A functional activation (``F.relu(x)``, ``torch.relu(x)``,
``x.relu()``, ``F.gelu``, ``F.silu``, ... inside a ``forward``) is named ``HOST:FN`` after the module
whose forward calls it -- ``layer1.0:relu``, ``:gelu`` for the model's own forward -- with the same
``#k`` rule.  Those are captured through torch.fx (:mod:`bnprobe.capture._fx`) when the model traces;
when it does not, capture uses module hooks only, lists the missed ones in
:attr:`CaptureResult.unseen` and says so with a :class:`CaptureWarning`.

Each layer also says which activation it is the output of (:attr:`LayerData.activation`: ``relu``,
``silu``, ... for a module and a functional call alike; a timm norm-act layer's is its ``act``'s; None
for a conv or a plain norm); a streaming probe
whose ``accumulator`` takes an ``activation`` keyword is told it as well (sparsity picks its zero test by it).

Spatial rules (``spatial``, a per-sample vector from a ``(C, H, W)`` activation):

* ``flatten`` -- all ``C*H*W`` values (what the paper probes; the default);
* ``channel_mean`` -- global average pooling to ``C`` values;
* ``pool:K`` -- adaptive average pooling to ``K x K`` per channel, ``C*K*K`` values.

The model leaves capture as it came: hooks removed, training flags, ``requires_grad`` and device
restored, also on error.
"""

from __future__ import annotations

import itertools
import numbers
import re
import shutil
import tempfile
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bnprobe._common import preserved_flags, safe_filename
from bnprobe.capture._fx import FunctionalPlan, functional_fn, plan_functional
from bnprobe.capture._layer_data import Accumulator, LayerData, ProbeInterface, new_accumulator
from bnprobe.capture._layer_kinds import activation_name, is_activation, is_gate
from bnprobe.capture._vector_store import VectorStore
from bnprobe.data._loaders import inputs_and_labels
from bnprobe.errors import BnprobeError
from bnprobe.train._loop import resolve_device

DEFAULT_MAX_MEMORY = 2 * 1024**3
DEFAULT_MAX_DEVICE_MEMORY = "auto"
AUTO_DEVICE_FRACTION = 0.5
"""``max_device_memory="auto"``: this share of the free device memory may hold vectors; the rest is
left to the forward pass and to the probes' own work on the device (one layer in float32 at a time)."""
LAYER_KINDS = ("act", "conv", "norm")
DTYPES = ("float32", "float16")


class CaptureWarning(UserWarning):
    """Capture could not see some of the selected activations (see :attr:`CaptureResult.unseen`)."""


@dataclass
class CaptureResult:
    """The captured layers of one model, in forward order."""

    layers: list[LayerData]
    labels: np.ndarray
    modules: dict[str, nn.Module] = field(default_factory=dict)
    """The module whose output each layer is; functional activations have none and are absent."""
    cache_dir: Path | None = None
    """Where the vectors were written, when they did not fit in ``max_memory``."""
    unseen: list[str] = field(default_factory=list)
    """Selected functional activations that could not be captured (the model does not trace)."""
    warnings: list[str] = field(default_factory=list)
    """What capture warned about, as it warned."""
    placement: str | None = None
    """Where the vectors are: ``"device"`` (the run device's memory, as long as the result lives),
    ``"memory"`` (host memory), ``"disk"`` (``.npy`` files in :attr:`cache_dir`); None without vectors."""
    inputs: torch.Tensor | None = None
    """The probed samples in capture order, on the CPU, as the model took them: row ``i`` gave row ``i``
    of every layer's vectors and :attr:`labels` ``[i]`` (a shuffled loader's order included)."""
    model: nn.Module | None = None
    """The captured model (probes that read the model, such as attributions, run it again)."""
    device: torch.device | None = None
    """Where the model ran, and where probes do their heavy arithmetic."""
    variant: str | None = None
    """Which variant the model is (``"bn"``, ``"identity"``, ...), as ``capture(variant=...)`` stated it;
    None: not stated (a probe comparing with the ``bn`` run refuses such a capture)."""
    seed: int | None = None
    """The run's seed, as ``capture(seed=...)`` stated it; None: not stated."""

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


def _output_activation(module: nn.Module) -> str | None:
    """The activation ``module``'s output comes out of: its own, or for a timm norm-act layer
    (``BatchNormAct2d``, ``GroupNormAct``: norm -> drop -> act) its ``act``'s, so that a norm-act layer
    selected as a ``norm`` gets its activation's zero test."""
    act = getattr(module, "act", None)
    if _is_norm(module) and isinstance(act, nn.Module):
        return activation_name(act)
    return activation_name(module)


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd)


_KIND_TESTS = {
    "act": lambda m: is_activation(m) and not is_gate(m),
    "conv": _is_conv,
    "norm": _is_norm,
}


def _parse_layers(layers: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """``layers`` -> (kinds, globs); no kind given means ``act``."""
    tokens = [t.strip() for t in (layers.split(",") if isinstance(layers, str) else layers) if t.strip()]
    kinds = [t for t in tokens if t in LAYER_KINDS] or ["act"]
    return kinds, [t for t in tokens if t not in LAYER_KINDS]


def _matches(name: str, globs: list[str]) -> bool:
    return not globs or any(fnmatch(name, g) for g in globs)


def select_modules(model: nn.Module, layers: str | Sequence[str] = "act") -> list[tuple[str, nn.Module]]:
    """Modules chosen by kind (``act``, ``conv``, ``norm``) and/or glob patterns on their paths.

    ``layers`` is a comma list or a sequence; kinds are unions, globs narrow to matching paths
    (``"layer3.*"`` alone means activations under ``layer3``; ``"conv,layer3.*"`` convs there).
    Functional activations are not modules: :func:`capture` finds them itself.
    """
    kinds, globs = _parse_layers(layers)
    return [(name, module) for name, module in model.named_modules()
            if name and any(_KIND_TESTS[k](module) for k in kinds) and _matches(name, globs)]


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


def call_names(paths: Sequence[str]) -> list[str]:
    """Layer names of calls listed in call order by the path they were made at.

    A path called once keeps its name; one called several times gives ``path#0``, ``path#1``, ...
    """
    totals, seen = Counter(paths), Counter()
    names = []
    for path in paths:
        names.append(path if totals[path] == 1 else f"{path}#{seen[path]}")
        seen[path] += 1
    return names


@dataclass
class _Entry:
    """One captured layer: the k-th call, in one forward, of the hook at ``path``."""

    path: str
    shape: tuple[int, ...]
    accumulators: dict[str, Accumulator] = field(default_factory=dict)
    store: VectorStore | None = None


class _Taps:
    """The forward hooks of one capture: a discovery pass records the layers, later passes fill them."""

    def __init__(self, spatial: str) -> None:
        self.spatial = spatial
        self.entries: dict[tuple[str, int], _Entry] = {}
        self.calls: Counter[str] = Counter()
        self.labels: torch.Tensor | None = None  # the batch in flight's labels; None while discovering

    def start_pass(self, labels: torch.Tensor | None) -> None:
        self.calls.clear()
        self.labels = labels

    def hook(self, path: str) -> Callable:
        def tap(_module: nn.Module, _inputs, output) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not isinstance(out, torch.Tensor):
                return
            key = (path, self.calls[path])
            self.calls[path] += 1
            if self.labels is None:
                self.entries[key] = _Entry(path, tuple(out.shape[1:]))
                return
            entry = self.entries.get(key)
            if entry is None:
                raise BnprobeError(f"layer {path} was called more often in a later batch than in the first; "
                                   "capture needs the same forward path for every batch")
            act = out.detach()
            for acc in entry.accumulators.values():
                acc.update(act, self.labels)
            if entry.store is not None:
                entry.store.write(reduce_spatial(act, self.spatial))
        return tap

    def names(self) -> dict[tuple[str, int], str]:
        return dict(zip(self.entries, call_names([path for path, _ in self.entries]), strict=True))


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
        return (inputs_and_labels(b) for b in data), n
    raise BnprobeError(f"capture cannot read data of type {type(data).__name__}; "
                       "pass (inputs, labels) tensors or a DataLoader")


def capture(
    model: nn.Module,
    data,
    *,
    layers: str | Sequence[str] = "act",
    samples: int | None = None,
    probes: Sequence[ProbeInterface] = (),
    vectors: bool | None = None,
    spatial: str = "flatten",
    dtype: str = "float32",
    max_memory: int | None = DEFAULT_MAX_MEMORY,
    max_device_memory: int | None | str = DEFAULT_MAX_DEVICE_MEMORY,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    on_batch: Callable[[int], None] | None = None,
    variant: str | None = None,
    seed: int | None = None,
) -> CaptureResult:
    """Capture the selected layers' activations of ``model`` on the first ``samples`` of ``data``.

    ``data`` is ``(inputs, labels)`` tensors, a :class:`bnprobe.data.Split`, or a DataLoader of
    ``(inputs, labels)`` batches over a sized dataset (``batch_size`` applies to tensors only).
    ``layers`` picks layers by kind and name glob; ``spatial`` turns each activation into a vector
    (both in the module docstring).  Streaming ``probes`` are fed batch by batch; ``vectors``
    (default: whether any probe needs vectors, or True when no probe is given) keeps
    the per-sample vectors as ``dtype`` -- ``float32``, or ``float16`` for half the memory, disk and
    transfer (about three significant digits, ample for sparsity and clustering; probes always read
    float32).  All layers' vectors together go to the first place they fit (:func:`plan_placement`):
    the run device's memory when it is a CUDA GPU, within ``max_device_memory`` bytes (``"auto"``,
    the default: half its free memory; None: no limit; 0: never); host memory, within ``max_memory``
    bytes (None: no limit); else ``.npy`` files in ``cache_dir`` (default: a temporary folder,
    removed with the result).  :attr:`CaptureResult.placement` says which.  Device-resident vectors
    hold that device memory until the result is dropped.  The model runs on ``device`` (default:
    where its parameters are) and is moved back afterwards.
    ``on_batch`` is called with each batch's sample count (for progress displays).

    The result also keeps what probing the capture needs (:func:`bnprobe.run_probes` builds the probe
    context from it): the probed inputs in the order they were captured, on the CPU (one more copy of
    the probed samples, small beside their activations), the model, the run device, and the run's
    ``variant`` and ``seed`` as stated here -- state ``variant`` for probes that compare with the
    ``bn`` run (cka), which refuse a capture that does not say which variant it is.
    """
    _check_arguments(spatial, max_device_memory, dtype, variant, seed)
    stream_probes = [p for p in probes if p.needs == "stream"]
    if vectors is None:
        vectors = not probes or any(p.needs == "vectors" for p in probes)
    selected = select_modules(model, layers)
    batches, n = _batches(data, samples, batch_size)
    if n == 0:
        raise BnprobeError("capture got no samples")
    first = next(batches)

    param_device = next(iter(model.parameters()), torch.empty(0)).device
    run_device = resolve_device(device) if device is not None else param_device
    taps = _Taps(spatial)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    stores: list[VectorStore] = []
    seen = _Seen()
    cache: Path | None = None
    placement: str | None = None
    try:
        if run_device != param_device:
            model.to(run_device)
        with preserved_flags(model, training=False, requires_grad=False), torch.no_grad():
            sample = first[0][:1].to(run_device)
            hooks = _plan_hooks(model, sample, selected, layers)
            handles += [m.register_forward_hook(taps.hook(path)) for path, m in hooks.targets]
            taps.start_pass(None)
            hooks.plan.forward(sample)  # discover layer order, call counts and shapes
            names = taps.names()
            cache, placement = _set_up_stores(taps.entries, names, n, vectors, spatial, dtype, run_device,
                                              max_memory, max_device_memory, cache_dir, stores)
            for key, entry in taps.entries.items():
                entry.accumulators = {p.key: new_accumulator(p, names[key], entry.shape, hooks.activation_of[key[0]])
                                      for p in stream_probes}
            _stream_batches(hooks.plan, taps, itertools.chain([first], batches), n, run_device, seen, on_batch)
    except BaseException:
        if cache is not None and cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)
        raise
    finally:
        for h in handles:
            h.remove()
        for s in stores:
            s.finish()
        if run_device != param_device:
            model.to(param_device)

    labels = torch.cat(seen.labels).numpy()
    module_of = dict(selected)
    layer_data = [LayerData(name=names[key], shape=entry.shape, labels=labels, accumulators=entry.accumulators,
                            load_vectors=entry.store.load if entry.store is not None else None,
                            load_tensor=entry.store.load_tensor if entry.store is not None else None,
                            activation=hooks.activation_of[key[0]])
                  for key, entry in taps.entries.items()]
    result = CaptureResult(layer_data, labels, {names[key]: module_of[key[0]] for key in taps.entries
                                                if key[0] in module_of}, cache, hooks.unseen, hooks.messages,
                           placement, torch.cat(seen.inputs), model, run_device, variant, seed)
    if cache is not None and cache_dir is None:
        weakref.finalize(result, shutil.rmtree, cache, ignore_errors=True)
    return result


def _check_arguments(spatial: str, max_device_memory: int | None | str, dtype: str, variant: str | None,
                     seed: int | None) -> None:
    """Refuse, in one line each, the capture settings that would fail (or mislead) later."""
    check_spatial(spatial)
    check_max_device_memory(max_device_memory)
    if dtype not in DTYPES:
        raise BnprobeError(f"capture dtype must be {' or '.join(DTYPES)}, got {dtype!r}")
    if variant is not None and (not isinstance(variant, str) or not variant):
        raise BnprobeError(f"capture variant must be a variant's name ('bn', 'identity', ...) or None, got {variant!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise BnprobeError(f"capture seed must be an integer or None, got {seed!r}")


@dataclass
class _Hooks:
    """What one capture hooks: the selected modules plus the recorders of functional activations."""

    plan: FunctionalPlan
    targets: list[tuple[str, nn.Module]]
    activation_of: dict[str, str | None]
    """Hook path -> the activation its output is (:attr:`LayerData.activation`)."""
    unseen: list[str]
    """Functional activations that match but cannot be captured (the model does not trace)."""
    messages: list[str]


def _plan_hooks(model: nn.Module, sample: torch.Tensor, selected: list[tuple[str, nn.Module]],
                layers: str | Sequence[str]) -> _Hooks:
    """The modules to hook for ``layers``, functional activations included where the model traces;
    warns (:class:`CaptureWarning`) about the ones it cannot reach, and refuses a selection of none."""
    kinds, globs = _parse_layers(layers)
    plan = plan_functional(model, sample, hooked=[m for _, m in selected],
                           wanted=lambda name: "act" in kinds and _matches(name, globs))
    unseen = call_names(plan.unseen)
    messages = [f"{plan.problem}; functional activations are not captured: {', '.join(unseen)}"] if unseen else []
    for message in messages:
        warnings.warn(message, CaptureWarning, stacklevel=3)  # at capture()'s caller
    targets = selected + plan.recorders
    activation_of = {path: _output_activation(m) for path, m in selected} | \
        {path: functional_fn(path) for path, _ in plan.recorders}
    if not targets and unseen:
        raise BnprobeError(f"layers={layers!r} selects only functional activations, and {plan.problem}; "
                           "write them as modules (nn.ReLU() ...) to capture them")
    if not targets:
        raise BnprobeError(f"no module matches layers={layers!r}; kinds are {', '.join(LAYER_KINDS)}, "
                           "or give a glob on layer names such as 'layer3.*'")
    return _Hooks(plan, targets, activation_of, unseen, messages)


@dataclass
class _Seen:
    """The labels and inputs of the batches captured so far, on the CPU, in order."""

    labels: list[torch.Tensor] = field(default_factory=list)
    inputs: list[torch.Tensor] = field(default_factory=list)


def _stream_batches(plan: FunctionalPlan, taps: _Taps, batches: Iterator, n: int, run_device: torch.device,
                    seen: _Seen, on_batch: Callable[[int], None] | None) -> None:
    """Run the first ``n`` samples of ``batches`` through the model, the taps feeding stores and accumulators."""
    count = 0
    for x, y in batches:
        if count >= n:
            break
        x, y = x[: n - count], y[: n - count]
        taps.start_pass(y.to(run_device))
        plan.forward(x.to(run_device))
        seen.labels.append(y.cpu())
        seen.inputs.append(x.detach().cpu())
        count += len(y)
        if on_batch is not None:
            on_batch(len(y))


def check_max_device_memory(value: int | None | str) -> int | None | str:
    """Validate ``max_device_memory`` early: ``"auto"``, None, or a byte count >= 0."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise BnprobeError(f"max_device_memory must be 'auto', None (no limit) or a byte count >= 0 "
                           f"(0: keep no vectors on the device), got {value!r}")
    return int(value)


def free_device_memory(device: torch.device | str) -> int:
    """Bytes a new tensor on CUDA ``device`` can take now: what the driver reports free
    (:func:`torch.cuda.mem_get_info`) plus what PyTorch's caching allocator holds unused."""
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def plan_placement(total_bytes: int, device: torch.device | str, max_memory: int | None,
                   device_budget: int | None | str = DEFAULT_MAX_DEVICE_MEMORY, *,
                   free_memory: Callable[[torch.device], int] | None = None) -> str:
    """Where ``total_bytes`` of vectors go: ``"device"``, ``"memory"`` or ``"disk"``.

    ``"device"`` when ``device`` (the run device) is CUDA and they fit in ``device_budget`` bytes --
    ``"auto"``: :data:`AUTO_DEVICE_FRACTION` of ``free_memory(device)`` (default
    :func:`free_device_memory`), None: no limit, 0: never; else ``"memory"`` when they fit in
    ``max_memory`` bytes (None: no limit); else ``"disk"``.  Off CUDA it never looks at the device.
    """
    device_budget = check_max_device_memory(device_budget)
    device = torch.device(device)
    if device.type == "cuda" and device_budget != 0:
        if device_budget == "auto":
            device_budget = int((free_memory or free_device_memory)(device) * AUTO_DEVICE_FRACTION)
        if device_budget is None or total_bytes <= device_budget:
            return "device"
    if max_memory is None or total_bytes <= max_memory:
        return "memory"
    return "disk"


def _set_up_stores(entries: dict[tuple[str, int], _Entry], names: dict[tuple[str, int], str], n: int,
                   vectors: bool, spatial: str, dtype: str, device: torch.device, max_memory: int | None,
                   max_device_memory: int | None | str, cache_dir: str | Path | None,
                   stores: list[VectorStore]) -> tuple[Path | None, str | None]:
    """Give every entry its store, all in the place :func:`plan_placement` picks; return the cache
    folder used (if any) and the placement (None without vectors)."""
    if not vectors:
        return None, None
    dims = {key: _vector_dim(entry.shape, spatial) for key, entry in entries.items()}
    total = n * sum(dims.values()) * np.dtype(dtype).itemsize
    placement = plan_placement(total, device, max_memory, max_device_memory)
    cache = None
    if placement == "disk":
        cache = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="bnprobe-capture-"))
        cache.mkdir(parents=True, exist_ok=True)
    for index, (key, entry) in enumerate(entries.items()):
        path = None
        if cache is not None:
            path = cache / f"{index:03d}-{safe_filename(names[key])}.npy"
        entry.store = VectorStore(n, dims[key], dtype, path, device if placement == "device" else None)
        stores.append(entry.store)
    return cache, placement


def _vector_dim(shape: tuple[int, ...], spatial: str) -> int:
    if len(shape) <= 1 or spatial == "flatten":
        return int(np.prod(shape))
    if spatial == "channel_mean":
        return int(shape[0])
    return int(shape[0]) * _pool_size(spatial) ** 2
