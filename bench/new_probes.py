"""Time the ``rank``, ``separability``, ``procrustes`` and ``intrinsic_dim`` probes against ``hdbscan`` on one input.

Makes the 5,000 x 4,096 float32 ReLU-like vectors of ``bench/hdbscan_probe.py`` (seeded, 10 classes)
and times, one after the other on the same input,

(a) the default ``hdbscan`` probe, the baseline,
(b) the default ``rank`` probe (above 2,048 samples and features: the seeded spectrum estimate),
(c) the ``separability`` probe,
(d) ``rank(method='exact')``, the eigenvalues of the whole Gram matrix, to print the estimate's error,
(e) the default ``procrustes`` probe, against a noisy column permutation of the vectors as the bn run's,
(f) ``procrustes(method='exact')`` on the same pair, to print the estimate's error,
(g) the default ``intrinsic_dim`` probe (plugin bnprobe-intrinsic-dim: TwoNN on every distinct vector),

and prints each time, its ratio to (a) -- the goal is at most 1.0 for (b), (c), (e) and (g) -- and how far
(b)'s numbers are from (d)'s and (e)'s from (f)'s.  Each probe runs once on a small input first, so
one-off start-up is not counted.

    python bench/new_probes.py               # full size
    python bench/new_probes.py --quick       # 1,500 x 1,024
    python bench/new_probes.py --skip-exact  # without (d) and (f)
    python bench/new_probes.py --device cuda
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch
from hdbscan_probe import make_vectors, timed

from bnprobe.probes import get_probe
from bnprobe.probes.base import LayerData, ProbeContext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,500 x 1,024 instead of 5,000 x 4,096")
    parser.add_argument("--skip-exact", action="store_true", help="do not time the exact methods (d), (f)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    samples, features = (1_500, 1_024) if args.quick else (5_000, 4_096)
    context = ProbeContext(model=torch.nn.Identity(), inputs=torch.zeros(1), labels=torch.zeros(1),
                           device=torch.device(args.device))
    vectors, labels = make_vectors(samples, features)
    probes = {"(a) hdbscan": get_probe("hdbscan"), "(b) rank": get_probe("rank"),
              "(c) separability": get_probe("separability")}
    if not args.skip_exact:
        probes["(d) rank exact"] = get_probe("rank", method="exact")
    probes["(e) procrustes"] = get_probe("procrustes")
    if not args.skip_exact:
        probes["(f) procrustes exact"] = get_probe("procrustes", method="exact")
    probes["(g) intrinsic_dim"] = get_probe("intrinsic_dim")
    reference = _noisy_copy(vectors)
    print(f"{samples} x {features} float32, {(vectors == 0).mean():.0%} zeros; device {args.device}; "
          f"torch threads {torch.get_num_threads()}")

    warm_vectors, warm_labels = make_vectors(200, 64, seed=1)
    for name, probe in probes.items():
        timed(probe, warm_vectors, warm_labels, _compared(context, _noisy_copy(warm_vectors), name))

    seconds, numbers = {}, {}
    for name, probe in probes.items():
        seconds[name], numbers[name] = timed(probe, vectors, labels, _compared(context, reference, name))
        shown = "  ".join(f"{metric} {value:.4g}" for metric, value in numbers[name].items()
                          if name != "(a) hdbscan" or metric in ("n_clusters", "ari"))
        ratio = seconds[name] / seconds["(a) hdbscan"]
        print(f"{name:20} {seconds[name]:7.2f} s  {ratio:5.2f} x hdbscan   {shown}")
    if not args.skip_exact:
        estimate, exact = numbers["(b) rank"], numbers["(d) rank exact"]
        print("estimate vs exact  " + "  ".join(f"{metric} {estimate[metric] / exact[metric] - 1:+.2%}"
                                                for metric in exact))
        estimate, exact = numbers["(e) procrustes"], numbers["(f) procrustes exact"]
        print("procrustes estimate vs exact  " + "  ".join(f"{metric} {estimate[metric] - exact[metric]:+.4f}"
                                                           for metric in exact))


def _noisy_copy(vectors: np.ndarray) -> np.ndarray:
    """The vectors' columns permuted (an orthogonal map) plus ReLU'd noise: a near but not rotated copy."""
    rng = np.random.default_rng(2)
    noisy = vectors[:, rng.permutation(vectors.shape[1])] + rng.normal(0.0, 0.3, vectors.shape)
    return np.maximum(noisy, 0.0).astype(np.float32)


def _compared(context: ProbeContext, reference: np.ndarray, name: str) -> ProbeContext:
    """``context`` as a variant's run whose bn run's layer holds ``reference``, for the procrustes probes."""
    if "procrustes" not in name:
        return context
    layer = LayerData(name="bench", shape=(reference.shape[1],), labels=None, load_vectors=lambda: reference)
    return replace(context, variant="identity", reference=lambda _name: layer)


if __name__ == "__main__":
    main()
