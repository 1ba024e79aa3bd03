"""Time the ``rank`` and ``separability`` probes against the ``hdbscan`` probe on the same vectors.

Makes the 5,000 x 4,096 float32 ReLU-like vectors of ``bench/hdbscan_probe.py`` (seeded, 10 classes)
and times, one after the other on the same input,

(a) the default ``hdbscan`` probe, the baseline,
(b) the default ``rank`` probe (above 2,048 samples and features: the seeded spectrum estimate),
(c) the ``separability`` probe,
(d) ``rank(method='exact')``, the eigenvalues of the whole Gram matrix, to print the estimate's error,

and prints each time, its ratio to (a) -- the goal is at most 1.0 for (b) and (c) -- and how far (b)'s
numbers are from (d)'s.  Each probe runs once on a small input first, so one-off start-up is not counted.

    python bench/new_probes.py               # full size
    python bench/new_probes.py --quick       # 1,500 x 1,024
    python bench/new_probes.py --skip-exact  # without (d)
    python bench/new_probes.py --device cuda
"""

from __future__ import annotations

import argparse

import torch
from hdbscan_probe import make_vectors, timed

from bnprobe.probes import get_probe
from bnprobe.probes.base import ProbeContext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,500 x 1,024 instead of 5,000 x 4,096")
    parser.add_argument("--skip-exact", action="store_true", help="do not time rank(method='exact') (d)")
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
    print(f"{samples} x {features} float32, {(vectors == 0).mean():.0%} zeros; device {args.device}; "
          f"torch threads {torch.get_num_threads()}")

    warm_vectors, warm_labels = make_vectors(200, 64, seed=1)
    for probe in probes.values():
        timed(probe, warm_vectors, warm_labels, context)

    seconds, numbers = {}, {}
    for name, probe in probes.items():
        seconds[name], numbers[name] = timed(probe, vectors, labels, context)
        shown = "  ".join(f"{metric} {value:.4g}" for metric, value in numbers[name].items()
                          if name != "(a) hdbscan" or metric in ("n_clusters", "ari"))
        ratio = seconds[name] / seconds["(a) hdbscan"]
        print(f"{name:18} {seconds[name]:7.2f} s  {ratio:5.2f} x hdbscan   {shown}")
    if not args.skip_exact:
        estimate, exact = numbers["(b) rank"], numbers["(d) rank exact"]
        print("estimate vs exact  " + "  ".join(f"{metric} {estimate[metric] / exact[metric] - 1:+.2%}"
                                                for metric in exact))


if __name__ == "__main__":
    main()
