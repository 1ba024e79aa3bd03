"""A training step's forward and backward, replayed from a CUDA graph.

A small model's step on a GPU is bound by kernel launches and by the Python that issues them (vmap
adds its own per-operation cost): the card finishes each kernel before the next is launched.  A CUDA
graph records the kernels of one step once and replays them all with a single launch.

:class:`StepGraph` wraps a function that runs the forward and backward pass and returns tensors
(losses, predictions).  What it graphs, and what it leaves eager:

* **Graphed:** the wrapped function, for one input shape -- the first one seen, the full batch.  Its
  inputs are copied into static tensors and the graph is replayed; its outputs and the parameters'
  gradients are the graph's own tensors, overwritten by every replay (read them before the next).
* **Eager:** the optimiser step, the learning-rate schedule and gradient clipping, which the caller
  runs as usual between steps.  So the schedule's learning rate, weight decay and clipping apply per
  step exactly as without the graph, and no optimiser needs graph-safe ("capturable") state; a fused
  optimiser is one or two launches anyway.  The last, shorter batch of an epoch has another shape
  and runs eagerly too.
* **Warm-up:** the first ``warmup`` steps run eagerly on a side stream (cuDNN and cuBLAS choose
  their kernels and allocate workspaces, which must not happen during recording).  They are real
  training steps: nothing is run twice and nothing is skipped.

The replayed kernels are the ones the eager step launches, in the same order, so the numbers are the
eager step's.  The wrapped function must not synchronise with the host (``.item()``, data-dependent
shapes) and must not draw random numbers; if recording fails for any reason the step falls back to
eager execution for good, and :attr:`StepGraph.status` says why.

Only CUDA tensors can be graphed: on other devices the wrapped function simply runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from bnprobe._common import describe

Recorder = Callable[[Callable[..., tuple[torch.Tensor, ...]], list[torch.Tensor], Sequence[torch.Tensor]],
                    tuple[tuple[torch.Tensor, ...], Callable[[], None]]]

DEFAULT_WARMUP = 3


def record_cuda_graph(step: Callable[..., tuple[torch.Tensor, ...]], inputs: list[torch.Tensor],
                      params: Sequence[torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], Callable[[], None]]:
    """Record ``step(*inputs)`` into a CUDA graph without running it; return its outputs and the replay.

    The graph is recorded on the inputs' device, which need not be the current one (``cuda:1``): a
    capture stream on another device would record nothing while the kernels ran eagerly.  An empty
    recording raises, so the caller falls back to eager steps rather than replay nothing.

    ``params`` is unused here: the recorded backward itself binds each parameter's ``.grad`` to the
    graph's gradient tensor.  (Test doubles that emulate a graph on the CPU need them.)
    """
    device = inputs[0].device
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.device(device), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capture_stream = torch.cuda.Stream(device)
        # The outer stream context puts the current stream back even when the recording fails (the
        # graph context's own exit raises first).  The default ("global") capture mode, as in
        # PyTorch's whole-network example: the backward pass runs on autograd's device thread, whose
        # calls must be checked too.
        with torch.cuda.stream(capture_stream), torch.cuda.graph(graph, stream=capture_stream):
            outputs = step(*inputs)
    for warning in caught:
        if "graph is empty" in str(warning.message).lower():
            raise RuntimeError(str(warning.message))
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return outputs, graph.replay


def graphs_supported(device: torch.device) -> bool:
    """Whether steps on ``device`` can be graphed: CUDA devices only."""
    return device.type == "cuda"


class StepGraph:
    """``step(*inputs) -> tensors`` that records itself into a CUDA graph after ``warmup`` eager calls.

    Call it like ``step`` itself, after the caller has reset the gradients (``zero_grad(set_to_none=True)``):
    a replay binds every parameter's ``.grad`` to the graph's gradient tensors, an eager call lets the
    backward pass create them.  ``params`` are the tensors whose gradients the step computes.
    """

    def __init__(self, step: Callable[..., tuple[torch.Tensor, ...]], params: Sequence[torch.Tensor],
                 device: torch.device, *, warmup: int = DEFAULT_WARMUP, enabled: bool = True) -> None:
        self.step, self.params, self.device, self.warmup = step, list(params), device, warmup
        self.status = "waiting to record" if enabled and graphs_supported(device) else \
            "eager: CUDA graphs need a CUDA device" if enabled else "eager: CUDA graphs are off"
        self._eager_only = not (enabled and graphs_supported(device))
        self._shape: tuple[torch.Size, ...] | None = None
        self._warm = 0
        self._inputs: list[torch.Tensor] = []
        self._outputs: tuple[torch.Tensor, ...] = ()
        self._grads: list[torch.Tensor | None] = []
        self._replay: Callable[[], None] | None = None
        self._side: torch.cuda.Stream | None = None
        self.replays = 0
        """How many steps were replayed from the graph (for tests and reports)."""

    @property
    def graphed(self) -> bool:
        return self._replay is not None

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shape = tuple(t.shape for t in inputs)
        if self._shape is None:
            self._shape = shape
        if self._eager_only or shape != self._shape:
            return self.step(*inputs)
        if self._replay is not None:
            for static, new in zip(self._inputs, inputs, strict=True):
                static.copy_(new)
            for p, grad in zip(self.params, self._grads, strict=True):
                p.grad = grad
            self._replay()
            self.replays += 1
            return self._outputs
        if self._warm < self.warmup:
            self._warm += 1
            return self._on_side_stream(inputs)
        return self._record(inputs)

    def release(self) -> None:
        """Free the graph, its memory pool and its static tensors (and the gradients bound to them)."""
        if self._replay is not None:
            for p in self.params:
                p.grad = None
        self._replay, self._inputs, self._outputs, self._grads, self._side = None, [], (), [], None
        self._eager_only = True

    def _on_side_stream(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if self.device.type != "cuda":
            return self.step(*inputs)
        if self._side is None:
            self._side = torch.cuda.Stream(self.device)
        side = self._side
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            outputs = self.step(*inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)  # tensors made on the side stream are then safe anywhere
        return outputs

    def _record(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Record the step on static copies of ``inputs``, then replay it once: this call's step."""
        self._inputs = [t.clone() for t in inputs]
        for p in self.params:
            p.grad = None
        try:
            outputs, replay = record_cuda_graph(self.step, self._inputs, self.params)
        except Exception as exc:  # recording is an optimisation: any failure means eager steps
            for p in self.params:
                p.grad = None
            self._eager_only, self._inputs = True, []
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # nothing recorded ran; let the failed capture settle
            self.status = f"eager: the step could not be recorded ({describe(exc)})"
            return self.step(*inputs)
        self._outputs, self._replay = tuple(outputs), replay
        self._grads = [p.grad for p in self.params]
        self.status = "CUDA graph"
        self._replay()
        self.replays += 1
        return self._outputs
