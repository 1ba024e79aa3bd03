"""Time the ``hdbscan`` probe against plain hdbscan on CNN-sized representations.

Makes 5,000 x 4,096 float32 ReLU-like vectors with class structure (seeded), then times

(a) the default probe (PCA to 50 dimensions on the device, hdbscan's tree search),
(b) exact mode (float64 distance matrix on the device, ``metric="precomputed"``),
(c) plain ``hdbscan.HDBSCAN()`` on the raw vectors, with the probe's cluster sizes,

and prints the three times, the speed-up (c)/(b) and the ARI between the labels of (b) and (c),
which should be 1.0.  Each probe is run once on a small input first, so one-off start-up (CUDA
context, kernel loading) is not counted.

    python bench/hdbscan_probe.py              # full size; plain hdbscan takes minutes on 2 cores
    python bench/hdbscan_probe.py --quick      # 1,500 x 1,024, seconds
    python bench/hdbscan_probe.py --skip-plain # (a) and (b) only
    python bench/hdbscan_probe.py --device cpu # the CPU even where there is a GPU
    python bench/hdbscan_probe.py --samples 50000 --skip-plain --skip-exact   # any size
    python bench/hdbscan_probe.py --samples 50000 --profile  # where the default probe's time goes
    python bench/hdbscan_probe.py --scaling    # the default probe at 5,000 to 50,000 samples

``--profile`` times the default probe's stages one by one, as the probe runs them: the PCA, the
KD-tree, hdbscan's core distances (the kNN queries), its Boruvka minimum spanning tree, the single
linkage and condensed tree, DBCV, the scores against the labels and the permutation chance level.
``--scaling`` prints the default probe's seconds at each size and the growth from the smallest.
"""

from __future__ import annotations

import argparse
import os
import time

import hdbscan
import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from bnprobe.probes._clustering import HdbscanProbe
from bnprobe.probes.base import LayerData, ProbeContext


def make_vectors(samples: int, features: int, classes: int = 10, latent: int = 32,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ReLU-like vectors with class structure, and their labels.

    Each class is a Gaussian blob (its own spread) in a ``latent``-dimensional space; 5 % of the
    samples are outliers drawn from a wider Gaussian.  A random linear map lifts the latent codes to
    ``features`` dimensions, per-feature noise and a negative bias are added, and a ReLU zeroes about
    60 % of the values, as in a CNN's hidden layer.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, samples)
    centres = rng.normal(0.0, 1.0, (classes, latent))
    spread = rng.uniform(0.3, 0.6, classes)
    codes = centres[labels] + rng.normal(0.0, 1.0, (samples, latent)) * spread[labels, None]
    outliers = rng.random(samples) < 0.05
    codes[outliers] = rng.normal(0.0, 1.2, (int(outliers.sum()), latent))
    lift = rng.normal(0.0, 1.0 / np.sqrt(latent), (latent, features))
    values = codes @ lift + rng.normal(0.0, 0.3, (samples, features)) - 0.3
    return np.maximum(values, 0.0).astype(np.float32), labels


def timed(probe: HdbscanProbe, vectors: np.ndarray, labels: np.ndarray,
          context: ProbeContext) -> tuple[float, dict[str, float]]:
    """Seconds one ``probe.measure`` takes, and its numbers."""
    layer = LayerData(name="bench", shape=(vectors.shape[1],), labels=labels, load_vectors=lambda: vectors)
    start = time.perf_counter()
    numbers = probe.measure(layer, context)
    if context.device.type == "cuda":
        torch.cuda.synchronize(context.device)
    return time.perf_counter() - start, numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,500 x 1,024 instead of 5,000 x 4,096")
    parser.add_argument("--skip-plain", action="store_true", help="do not time plain hdbscan (c)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=None, help="samples (default 5,000; 1,500 with --quick)")
    parser.add_argument("--features", type=int, default=None, help="features (default 4,096; 1,024 with --quick)")
    parser.add_argument("--skip-exact", action="store_true", help="do not time exact mode (b)")
    parser.add_argument("--profile", action="store_true", help="time the default probe's stages one by one")
    parser.add_argument("--scaling", action="store_true", help="the default probe at 5,000 to 50,000 samples")
    args = parser.parse_args()

    samples, features = (1_500, 1_024) if args.quick else (5_000, 4_096)
    samples, features = args.samples or samples, args.features or features
    device = torch.device(args.device)
    context = ProbeContext(model=torch.nn.Identity(), inputs=torch.zeros(1), labels=torch.zeros(1),
                           device=device)
    if args.profile:
        profile(samples, features, device)
        return
    if args.scaling:
        scaling(features, device, context)
        return
    vectors, labels = make_vectors(samples, features)
    default, exact = HdbscanProbe(), HdbscanProbe(exact=True)
    print(f"{samples} x {features} float32, {(vectors == 0).mean():.0%} zeros; device {device}; "
          f"torch threads {torch.get_num_threads()}")

    warm_vectors, warm_labels = make_vectors(200, 64, seed=1)
    for probe in (default, exact):
        timed(probe, warm_vectors, warm_labels, context)

    seconds_default, numbers = timed(default, vectors, labels, context)
    print(f"(a) default probe  {seconds_default:8.2f} s   n_clusters {numbers['n_clusters']:.0f}  "
          f"noise {numbers['noise_fraction']:.3f}  ari {numbers['ari']:.3f}  dbcv {numbers['dbcv']:.3f}")
    if args.skip_exact:
        return
    seconds_exact, numbers = timed(exact, vectors, labels, context)
    print(f"(b) exact mode     {seconds_exact:8.2f} s   n_clusters {numbers['n_clusters']:.0f}  "
          f"noise {numbers['noise_fraction']:.3f}  ari {numbers['ari']:.3f}  dbcv {numbers['dbcv']:.3f}")
    if args.skip_plain:
        return

    plain = hdbscan.HDBSCAN(min_cluster_size=exact.min_cluster_size, min_samples=exact.min_samples)
    start = time.perf_counter()
    plain_labels = plain.fit(vectors).labels_
    seconds_plain = time.perf_counter() - start
    agreement = adjusted_rand_score(plain_labels, exact.cluster(vectors, device).labels)
    print(f"(c) plain hdbscan  {seconds_plain:8.2f} s   n_clusters {plain_labels.max() + 1}  "
          f"noise {(plain_labels < 0).mean():.3f}")
    print(f"speed-up (c)/(b)   {seconds_plain / seconds_exact:8.1f} x")
    print(f"ARI exact vs plain {agreement:8.4f}")


SCALING_SIZES = (5_000, 10_000, 20_000, 50_000)
"""The sample counts of ``--scaling`` (issue 32's table)."""


def scaling(features: int, device: torch.device, context: ProbeContext) -> None:
    """The default probe's seconds at each of :data:`SCALING_SIZES`, and the growth from the first."""
    probe = HdbscanProbe()
    warm_vectors, warm_labels = make_vectors(200, 64, seed=1)
    timed(probe, warm_vectors, warm_labels, context)
    print(f"default hdbscan probe on {features} features, device {device}, torch threads {torch.get_num_threads()}")
    first = None
    for samples in SCALING_SIZES:
        vectors, labels = make_vectors(samples, features)
        seconds, numbers = timed(probe, vectors, labels, context)
        first = first or seconds
        print(f"{samples:>7,} samples  {seconds:7.2f} s  x{seconds / first:5.1f} of {SCALING_SIZES[0]:,}  "
              f"(n log n: x{samples * np.log(samples) / (SCALING_SIZES[0] * np.log(SCALING_SIZES[0])):5.1f})  "
              f"n_clusters {numbers['n_clusters']:.0f}  ari {numbers['ari']:.3f}", flush=True)
        del vectors


def profile(samples: int, features: int, device: torch.device) -> None:
    """Seconds of each stage of the default probe on ``samples x features`` vectors, run as the probe runs
    them (hdbscan's Boruvka KD-tree path, with its own parameters), and their total."""
    from hdbscan._hdbscan_boruvka import KDTreeBoruvkaAlgorithm
    from hdbscan._hdbscan_linkage import label
    from hdbscan.hdbscan_ import KDTree, _tree_to_labels
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    from bnprobe.probes._chance import ari_chance
    from bnprobe.probes._clustering import pca_reduce

    probe = HdbscanProbe()
    vectors, labels = make_vectors(samples, features)
    stages: dict[str, float] = {}

    def stage(name: str, work):
        start = time.perf_counter()
        out = work()
        stages[name] = time.perf_counter() - start
        print(f"  {name:<34} {stages[name]:7.2f} s", flush=True)
        return out

    print(f"{samples} x {features}; device {device}; torch threads {torch.get_num_threads()}")
    points, _ = stage("PCA to 50 dimensions (float64)", lambda: pca_reduce(vectors, probe.pca_dims, device))
    points = points.astype(np.float64)
    min_samples = probe.min_samples or probe.min_cluster_size
    tree = stage("KD-tree", lambda: KDTree(points, metric="euclidean", leaf_size=40))
    algorithm = stage("core distances (kNN queries, all cores)",
                      lambda: KDTreeBoruvkaAlgorithm(tree, min_samples, metric="euclidean", leaf_size=40 // 3,
                                                     approx_min_span_tree=True, n_jobs=os.cpu_count()))
    mst = stage("minimum spanning tree (Boruvka)", algorithm.spanning_tree)
    linkage = stage("single linkage", lambda: label(mst[np.argsort(mst.T[2]), :]))
    found = stage("condensed tree and clusters", lambda: _tree_to_labels(points, linkage, probe.min_cluster_size))
    clusters = found[0]
    fitted = hdbscan.HDBSCAN(min_cluster_size=probe.min_cluster_size, gen_min_span_tree=True)
    fitted._raw_data, fitted.labels_, fitted._min_spanning_tree = points, clusters, mst
    fitted._metric_kwargs, fitted.metric = {}, "euclidean"
    stage("DBCV (relative_validity_)", lambda: fitted.relative_validity_)
    ari = stage("ARI, NMI, AMI", lambda: (adjusted_rand_score(labels, clusters),
                                          normalized_mutual_info_score(labels, clusters),
                                          adjusted_mutual_info_score(labels, clusters)))[0]
    stage(f"chance level ({probe.permutations} permutations)",
          lambda: ari_chance(labels, clusters, ari, probe.permutations, probe.seed))
    print(f"  {'total':<34} {sum(stages.values()):7.2f} s   n_clusters {clusters.max() + 1}  "
          f"noise {(clusters < 0).mean():.3f}")


if __name__ == "__main__":
    main()
