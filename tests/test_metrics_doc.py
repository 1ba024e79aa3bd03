"""Every metric a built-in probe (or a plugin in plugins/) emits is declared in code and documented in
docs/metrics.md, and every declared or documented one is emitted: run on a tiny capture."""

import re
from pathlib import Path

import torch
from click.testing import CliRunner
from torch import nn

from bnprobe.capture import capture
from bnprobe.cli import cli
from bnprobe.probes import build_probes
from bnprobe.probes.metrics import declared, documented_probes, generated_part, metrics_markdown
from bnprobe.probes.runner import run_probes

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
SPECS = {"sparsity": "sparsity", "hdbscan": "hdbscan(min_cluster_size=5)", "binary_patterns": "binary_patterns",
         "attribution": "attribution(samples=8,n_steps=4)",  # IntegratedGradients: with convergence_delta
         "layer_attribution": "layer_attribution(method=LayerConductance,samples=8,n_steps=4)", "cka": "cka",
         "cka_matrix": "cka_matrix", "rank": "rank", "separability": "separability", "linear": "linear",
         "selectivity": "selectivity", "procrustes": "procrustes", "intrinsic_dim": "intrinsic_dim",
         "ablation": "ablation(fractions=[0.5],orders=2,images=20)"}
"""One spec per documented probe, with a method that emits every declared metric."""


def _emitted() -> dict[str, set[str]]:
    """``{probe name: metric names}`` from running every documented probe on a tiny CNN."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    x, y = torch.randn(60, 1, 8, 8), torch.arange(60) % 3
    probes = build_probes(list(SPECS.values()))
    captured = capture(model, (x, y), probes=probes, vectors=True, variant="bn", seed=0)
    # the bn run: cka compares each layer with itself; ablation scores the model on held-out images
    outcome = run_probes(captured, probes, reference=captured, held_out=(x, y))
    return {probe.name: {m for layer in outcome.values[probe.key].values() for m in layer} for probe in probes}


def test_emitted_declared_and_documented_metrics_are_the_same():
    infos = {info.name: info for info in documented_probes()}
    assert set(infos) == set(SPECS)  # every built-in and the plugins in plugins/
    text = DOC.read_text(encoding="utf-8")
    documented = dict(re.findall(r"^### `([\w-]+)`.*?\n(.*?)(?=^### |\Z)", generated_part(text), re.S | re.M))
    emitted = _emitted()
    assert emitted["sparsity"] >= {"class_sparsity_0", "class_sparsity_2"}  # a family, declared once
    for name, info in infos.items():
        metrics = info.cls.metrics
        assert all(declared(metrics, m) for m in emitted[name]), (name, emitted[name] - set(metrics))
        assert {declared(metrics, m) for m in emitted[name]} == set(metrics), name  # none declared but not emitted
        rows = set(re.findall(r"^\| `([^`]+)` \|", documented[name], re.M))
        assert rows == set(metrics), name
        assert info.cls.key_metric in metrics
        for metric in metrics.values():
            assert metric.definition and metric.range
            assert metric.direction in ("higher is better", "lower is better", "neither")


def test_the_doc_tables_are_the_generated_ones_with_the_defaults_bnprobe_probes_prints():
    text = DOC.read_text(encoding="utf-8")
    assert generated_part(text) == metrics_markdown(documented_probes()), \
        "docs/metrics.md is stale: python -c 'from bnprobe.probes.metrics import rewrite; rewrite(\"docs/metrics.md\")'"
    listing = CliRunner().invoke(cli, ["probes"], env={"COLUMNS": "200"}).output
    for info in documented_probes():
        for key, value in info.cls.param_defaults().items():
            assert f"{key}={value!r}" in listing and f"`{key}={value!r}`" in text
    assert "`dims='auto'`" in text and "50 dimensions" in text


def test_bnprobe_probes_metrics_lists_every_declared_metric():
    result = CliRunner().invoke(cli, ["probes", "--metrics"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for info in documented_probes():
        assert f"{info.name} — metrics (key: {info.cls.key_metric})" in result.output
        for name, metric in info.cls.metrics.items():
            line = next(line for line in result.output.splitlines() if f"│ {name} " in line)
            assert metric.direction in line


NEWER_METRICS = {
    "rank": ("effective_rank", "stable_rank", "pca_components_99", "pca_fraction_99"),
    "linear": ("accuracy", "chance_accuracy", "sparse_accuracy_<k>", "features_used"),
    "selectivity": ("class_selectivity", "class_selectivity_std", "class_selectivity_q90", "selectivity_channels"),
    "separability": ("nc1", "cdnv"),
    "ablation": ("auc_selective", "auc_random", "half_fraction_selective", "accuracy_selective_<fraction>",
                 "accuracy_random_<fraction>", "ranked_fraction", "channels"),
    "procrustes": ("procrustes", "procrustes_euclidean"),
    "sparsity": ("dormant_fraction",),
    "cka": ("cka",),
    "cka_matrix": ("cka", "bn:<layer>"),
    "intrinsic_dim": ("intrinsic_dim", "intrinsic_dim_ratio", "duplicate_fraction", "samples_used"),
}
"""The probes and metrics added since the first release (issue 30), each of which ``bnprobe probes --metrics``
must list under its probe's own table; the plugins' too."""


def test_bnprobe_probes_metrics_lists_the_newer_probes_and_the_plugins():
    output = CliRunner().invoke(cli, ["probes", "--metrics"], env={"COLUMNS": "250"}).output
    titles = [i for i, line in enumerate(output.splitlines()) if " — metrics (key: " in line]
    tables = {output.splitlines()[start].split(" — ")[0].strip(): "\n".join(output.splitlines()[start:end])
              for start, end in zip(titles, [*titles[1:], None], strict=True)}
    for probe, metrics in NEWER_METRICS.items():
        assert probe in tables, (probe, sorted(tables))
        for metric in metrics:
            assert f"│ {metric} " in tables[probe], (probe, metric)
    assert "debiased" in tables["cka"] and "debiased" in tables["cka_matrix"]  # the range with debiased=True
    assert "dormant" in tables["sparsity"]
    listing = CliRunner().invoke(cli, ["probes"], env={"COLUMNS": "250"}).output  # the option itself
    assert "debiased=False" in next(line for line in listing.splitlines() if line.startswith("│ cka "))


def test_a_metric_family_matches_its_members_only():
    metrics = {"class_sparsity_<label>": None, "class_sparsity_spread": None, "hoyer": None}
    assert declared(metrics, "class_sparsity_7") == "class_sparsity_<label>"
    assert declared(metrics, "class_sparsity_spread") == "class_sparsity_spread"
    assert declared(metrics, "hoyer") == "hoyer" and declared(metrics, "hoyer2") is None
    assert declared(metrics, "class_sparsity_") is None
