"""The probe protocol: what a probe declares and the verb it implements.

A probe is to bnprobe what an attribution method is to captum: a class configured in ``__init__``
with one verb, :meth:`Probe.measure`, that turns one layer's representations into named numbers.
The study loop and the report never special-case a probe; they only read three declarations:

* ``needs`` -- what the probe reads: ``"stream"`` (statistics accumulated batch by batch during
  capture, never the whole layer in memory), ``"vectors"`` (one ``(samples, features)`` array per
  layer), or ``"model"`` (the trained model and the probed inputs, e.g. for attributions);
* ``scope`` -- ``"layer"`` (measured once per captured layer) or ``"model"`` (once per run; its
  numbers are filed under the layer name ``"model"``, or under the layers it names when it returns
  ``{layer: {metric: value}}``, as ``cka_matrix`` does: one computation over every layer pair, filed
  by layer);
* ``name``, ``description`` and ``key_metric`` -- what ``bnprobe probes`` lists and the terminal
  report shows first; ``metrics`` -- what each number means (``bnprobe probes --metrics``).

Probes are found through :func:`register_probe` (built-ins) and the ``bnprobe.probes`` entry-point
group (plugins: ordinary installed packages, imported only when the registry is first asked).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from bnprobe._common import REFERENCE_VARIANT
from bnprobe.capture._layer_data import Accumulator, LayerData
from bnprobe.errors import BnprobeError
from bnprobe.probes.metrics import Metric

if TYPE_CHECKING:
    import torch
    from torch import nn

Need = Literal["stream", "vectors", "model"]
Scope = Literal["layer", "model"]


@dataclass
class ProbeContext:
    """Everything about the run a probe may need beyond one layer's data.

    :func:`bnprobe.run_probes` builds it from the capture; build one by hand only to call a probe's
    ``measure`` directly (in its tests, say).
    """

    model: nn.Module
    inputs: torch.Tensor
    """The probed samples, on the CPU, as the model takes them, in capture order."""
    labels: torch.Tensor
    device: torch.device
    variant: str | None = None
    """Which variant the run is (``"bn"``, ``"identity"``, ...); None: not stated, which a probe that
    compares with the ``bn`` run refuses (:meth:`stated_variant`)."""
    seed: int | None = None
    layer_modules: dict[str, nn.Module] = field(default_factory=dict)
    """Module whose output is each captured layer (``name`` -> module)."""
    reference: Callable[[str], LayerData | None] = lambda _name: None
    """The same layer in the reference (``bn``) run of the same seed, when there is one."""
    layers: Sequence[LayerData] = ()
    """Every captured layer of this run, in forward order: what a model-scope probe that reads the
    layers (``cka_matrix``) measures."""
    reference_layers: Sequence[LayerData] = ()
    """Every captured layer of the reference (``bn``) run of the same seed, in forward order; empty
    when there is none."""
    held_out: tuple[torch.Tensor, torch.Tensor] | None = None
    """Held-out (test) images and their labels, as the model takes them: where a probe that scores the
    model's predictions (``ablation``) measures accuracy, never on the probed samples.  A study passes
    its test split; None: not given (``run_probes(..., held_out=(x, y))``)."""

    def stated_variant(self, probe: str) -> str:
        """The run's variant, for ``probe``, which compares with the ``bn`` run; refuses an unstated one.

        Without it such a probe cannot tell the ``bn`` run (compared with itself) from another variant
        whose reference is missing, and would report 1.0 for every layer.
        """
        if self.variant is None:
            raise BnprobeError(f"probe {probe} compares each layer with the {REFERENCE_VARIANT} run, but this run's "
                               "variant is not stated; say which it is: bnprobe.capture(..., variant='identity')")
        return self.variant


class Probe(ABC):  # noqa: B024 - measure() or prepare()/conclude(): either may be the one defined
    """Base class of every probe: configure in ``__init__``, measure with :meth:`measure`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[Need] = "vectors"
    scope: ClassVar[Scope] = "layer"
    key_metric: ClassVar[str] = ""
    """The metric the terminal report shows for this probe (the JSON holds them all)."""
    metrics: ClassVar[dict[str, Metric]] = {}
    """Every metric the probe emits -> its definition, range and direction (:mod:`bnprobe.probes.metrics`)."""
    compares_with_reference: ClassVar[bool] = False
    """True for a probe that reads the ``bn`` run's layers (``context.reference``): a study that
    runs it must include the ``bn`` variant, which it checks before training."""
    version: ClassVar[int] = 1
    """Raised by one whenever the probe's numbers change under the same key (a new default, a corrected
    formula).  A study records each probe's version, and refuses to resume runs probed under another
    one beside new runs, so that no table mixes the old numbers with the new; probing the study again
    measures every run under the current version."""
    layer_matrix: ClassVar[str] = ""
    """The prefix of a metric family with one metric per layer of the ``bn`` run (``bn:`` for
    ``bn:<layer>``), when the probe has one: its values form a matrix, this run's layers by the
    ``bn`` run's, that the report draws as a heatmap per variant (``plots/<probe>_heatmap.png``)."""

    def __init__(self, **params: Any) -> None:
        if params:
            raise BnprobeError(f"probe {self.name}: unknown parameter(s) {', '.join(params)}; "
                               f"it takes: {', '.join(self.param_names()) or 'none'}")

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """Numbers for one layer (``scope="layer"``) or for the run (``scope="model"``).

        A probe overrides this, or splits its work into :meth:`prepare` and :meth:`conclude`.
        """
        if not self.splits:
            raise NotImplementedError(f"probe {self.name} defines neither measure() nor prepare() and conclude()")
        return self.conclude(self.prepare(layer, context))

    def prepare(self, layer: LayerData, context: ProbeContext) -> Any:
        """The first half of :meth:`measure`, run in the study's process, where the model and its device are.

        Read the layer and do the heavy linear algebra here (on ``context.device``); return what
        :meth:`conclude` needs, as a picklable value, as small as it can be (e.g. a PCA projection).
        """
        raise NotImplementedError(f"probe {self.name} does not split its measurement")

    def conclude(self, prepared: Any) -> dict[str, float]:
        """The second half of :meth:`measure`: the numbers, from what :meth:`prepare` returned.

        It runs on the CPU and may run in a worker process (``bnprobe.probes.pool``), so that the CPU
        work of many layers and runs -- HDBSCAN is serial per call -- uses every core.
        """
        raise NotImplementedError(f"probe {self.name} does not split its measurement")

    @property
    def splits(self) -> bool:
        """Whether this probe defines :meth:`prepare` and :meth:`conclude` (and so can be parallelised)."""
        return type(self).prepare is not Probe.prepare and type(self).conclude is not Probe.conclude

    def accumulator(self, layer: str, shape: tuple[int, ...]) -> Accumulator:
        """A fresh running state for ``layer``; only streaming probes implement this.

        An accumulator that takes an ``activation`` keyword is also told the layer's activation
        (:attr:`LayerData.activation`; see :func:`bnprobe.capture._layer_data.new_accumulator`).
        """
        raise NotImplementedError(f"probe {self.name} does not stream")

    def notes(self, layer: LayerData | None, context: ProbeContext) -> dict[str, str]:
        """Words on how this probe measured ``layer`` that its numbers cannot say -- sparsity's zero test
        -- as ``{name: text}``; none by default.

        The study files them beside the numbers (``notes`` in ``results.json``) and the report shows them
        under the probe's tables.  Called in the study's process after :meth:`measure` (or :meth:`prepare`).
        """
        return {}

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the keyword parameters ``__init__`` takes."""
        sig = inspect.signature(cls.__init__)
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return [p for p, v in sig.parameters.items() if p != "self" and v.kind in kinds]

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        """``{parameter: default}`` as ``bnprobe probes`` shows them."""
        sig = inspect.signature(cls.__init__)
        return {p: (None if v.default is inspect.Parameter.empty else v.default)
                for p, v in sig.parameters.items() if p in cls.param_names()}

    def get_params(self) -> dict[str, Any]:
        """The configured parameter values (scikit-learn's ``get_params``).

        As in scikit-learn, ``__init__`` stores each parameter under its own name: the probe's key
        (what its numbers are filed under) and its ``repr`` are built from these attributes.
        """
        missing = [p for p in self.param_names() if not hasattr(self, p)]
        if missing:
            raise BnprobeError(f"probe {self.name!r} ({type(self).__module__}.{type(self).__qualname__}): "
                               f"__init__ must store each parameter as self.<name>; missing: {', '.join(missing)}")
        return {p: getattr(self, p) for p in self.param_names()}

    @property
    def key(self) -> str:
        """Name plus the parameters that differ from their defaults: ``hdbscan(dims=30)``."""
        defaults = self.param_defaults()
        changed = {k: v for k, v in self.get_params().items() if defaults.get(k) != v}
        if not changed:
            return self.name
        return f"{self.name}({','.join(f'{k}={v!r}' for k, v in sorted(changed.items()))})"

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


class StreamingProbe(Probe):
    """A probe computed from running statistics gathered during capture."""

    needs: ClassVar[Need] = "stream"

    @abstractmethod
    def accumulator(self, layer: str, shape: tuple[int, ...]) -> Accumulator:
        """A fresh running state for ``layer``."""

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """Read the numbers out of the accumulator capture filled for this probe."""
        return self.state(layer).result()

    def state(self, layer: LayerData) -> Accumulator:
        """The accumulator capture filled for this probe at ``layer``."""
        try:
            return layer.accumulators[self.key]
        except KeyError:
            raise BnprobeError(f"probe {self.key}: layer {layer.name} was captured without this probe's "
                               "statistics; capture with this probe in `probes`") from None
