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
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()

    samples, features = (1_500, 1_024) if args.quick else (5_000, 4_096)
    device = torch.device(args.device)
    context = ProbeContext(model=torch.nn.Identity(), inputs=torch.zeros(1), labels=torch.zeros(1),
                           device=device)
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


if __name__ == "__main__":
    main()
