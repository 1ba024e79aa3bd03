"""CUDA-graph replay of the fused step: the bookkeeping around the graph, checked on the CPU.

A CPU cannot record a CUDA graph, so these tests swap in a recorder with a graph's semantics: the
recorded step's outputs and gradients are static tensors that every replay overwrites in place, and
the step reads its inputs from the static input tensors.  Recording runs the step once and the first
replay is then a no-op -- together one execution, as with a real graph, which records without
running and then replays.  With it, fused training must give exactly the weights of eager fused
training: any stale input, output or gradient binding would change them.  ``tests/test_gpu.py``
checks the real graph on a GPU.
"""

import pytest
import torch

from bnprobe.models import create_model
from bnprobe.train import FusedRun, TrainConfig, train_fused
from bnprobe.train import _step_graph as step_graph
from bnprobe.train._step_graph import StepGraph

SEEDS = (0, 1)


def emulated_graph(step, inputs, params):
    """Record ``step`` on ``inputs`` the way a CUDA graph behaves, on any device."""
    outputs = tuple(step(*inputs))
    grads = [p.grad for p in params]
    first = [True]

    def replay():
        if first[0]:  # recording already ran this step
            first[0] = False
            return
        bound = [p.grad for p in params]  # a graph writes its gradient tensors, whatever .grad is bound to
        for p in params:
            p.grad = None
        for static, new in zip(outputs, step(*inputs), strict=True):
            static.copy_(new)
        for p, grad, was in zip(params, grads, bound, strict=True):
            grad.copy_(p.grad)
            p.grad = was
    return outputs, replay


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(n, 1, 8, 8, generator=g)
    return x, y


def _train(tmp_path, config, cuda_graph, tag):
    from bnprobe.data import Split
    x, y = _data()
    models = {}
    for seed in SEEDS:
        torch.manual_seed(seed)
        models[seed] = create_model("cnn4", num_classes=4, in_chans=1, width=8)
    summaries = []
    results = train_fused([FusedRun(models[s], s, tmp_path / f"{tag}{s}.pt") for s in SEEDS], Split(x, y),
                          config=config, device="cpu", cuda_graph=cuda_graph, on_graph=summaries.append)
    return models, results, summaries


@pytest.fixture
def graphs_on_cpu(monkeypatch):
    monkeypatch.setattr(step_graph, "graphs_supported", lambda device: True)
    monkeypatch.setattr(step_graph, "record_cuda_graph", emulated_graph)


@pytest.mark.parametrize("config", [
    TrainConfig(epochs=3, batch_size=24, optimizer="adamw", lr=1e-2),
    TrainConfig(epochs=3, batch_size=24, optimizer="sgd", lr=0.05, grad_clip=0.5, label_smoothing=0.1),
], ids=["adamw", "sgd-clip"])
def test_replayed_steps_give_the_eager_weights_exactly(tmp_path, graphs_on_cpu, config):
    eager, eager_results, eager_summary = _train(tmp_path, config, cuda_graph=False, tag="eager")
    graphed, graphed_results, summary = _train(tmp_path, config, cuda_graph=True, tag="graph")
    # 64 samples in batches of 24: 24, 24, 16 per epoch; 6 full batches in 3 epochs, the first 3 warm up,
    # the 4th is recorded (and replayed once), the 5th and 6th replayed; the short batches run eagerly.
    assert summary == ["CUDA graph, 3 of 9 steps replayed"]
    assert eager_summary == ["eager: CUDA graphs are off"]
    for seed in SEEDS:
        for a, b in zip(eager[seed].state_dict().values(), graphed[seed].state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert [r.history for r in eager_results] == [r.history for r in graphed_results]


def test_a_step_that_cannot_be_recorded_runs_eagerly(tmp_path, monkeypatch):
    def refuse(step, inputs, params):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(step_graph, "graphs_supported", lambda device: True)
    monkeypatch.setattr(step_graph, "record_cuda_graph", refuse)
    config = TrainConfig(epochs=2, batch_size=24, optimizer="adamw", lr=1e-2)
    eager, _, _ = _train(tmp_path, config, cuda_graph=False, tag="eager")
    fallen_back, _, summary = _train(tmp_path, config, cuda_graph=True, tag="fallback")
    assert summary == ["eager: the step could not be recorded (RuntimeError: operation not permitted when "
                       "stream is capturing)"]
    for seed in SEEDS:
        for a, b in zip(eager[seed].state_dict().values(), fallen_back[seed].state_dict().values(), strict=True):
            assert torch.equal(a, b)


def test_without_cuda_the_step_just_runs():
    weight = torch.ones(3, requires_grad=True)
    graph = StepGraph(lambda x: ((weight * x).sum().backward(), x)[1:], [weight], torch.device("cpu"))
    out = graph(torch.arange(3.0))
    assert graph.status == "eager: CUDA graphs need a CUDA device"
    assert not graph.graphed and graph.replays == 0
    assert torch.equal(out[0], torch.arange(3.0)) and torch.equal(weight.grad, torch.arange(3.0))


def test_an_error_without_a_message_still_falls_back_with_a_status(tmp_path, monkeypatch):
    def refuse(step, inputs, params):
        raise RuntimeError()
    monkeypatch.setattr(step_graph, "graphs_supported", lambda device: True)
    monkeypatch.setattr(step_graph, "record_cuda_graph", refuse)
    _, _, summary = _train(tmp_path, TrainConfig(epochs=2, batch_size=24), cuda_graph=True, tag="fallback")
    assert summary == ["eager: the step could not be recorded (RuntimeError)"]
