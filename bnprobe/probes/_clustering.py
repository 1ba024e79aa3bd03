"""Clustering probes: do a layer's representations fall into class-like groups?

Two views of the same question:

* ``hdbscan`` -- *explicit* clusters.  HDBSCAN on the per-sample vectors (after a PCA on the run's
  device) finds dense groups without being told how many; the probe reports how many it found, how
  much it left as noise and how well the groups match the class labels.
* ``binary_patterns`` -- *implicit* clusters in the sense of Haasbroek & Davel: every channel splits
  the samples into the ones it is active on and the rest, so a channel whose active set is one class
  acts as a class detector, with no clustering algorithm involved.

Both read the captured vectors (``needs="vectors"``) and measure each layer on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bnprobe.capture._layer_data import LayerData
from bnprobe.errors import BnprobeError
from bnprobe.params import check_choice, check_float, check_int
from bnprobe.probes._chance import ari_chance
from bnprobe.probes._knn_tree import mutual_reachability_tree
from bnprobe.probes._protocol import Need, Probe, ProbeContext
from bnprobe.probes._registry import register_probe
from bnprobe.probes.metrics import Metric

if TYPE_CHECKING:
    import torch

DEFAULT_DIMS = 50
"""PCA dimensions of the default HDBSCAN run: enough to keep the class structure of a CNN layer, few
enough for hdbscan's fast Boruvka tree search (above 60 dimensions it falls back to Prim's algorithm,
which computes every pairwise distance: minutes for 5,000 samples of 4,096 features)."""

BACKENDS = ("knn", "hdbscan")
"""How the default (not exact) mode builds HDBSCAN's spanning tree: ``knn``, an exact nearest-neighbour
graph in torch on the run's device (:mod:`bnprobe.probes._knn_tree`), or ``hdbscan``'s own KD-tree
Boruvka search, the reference.  Both hand the tree to hdbscan's own condensed tree and cluster
selection."""

DEFAULT_PERMUTATIONS = 199
"""Label shuffles behind the ARI's chance level: p-values down to 1/200, in well under a second for 5,000
samples (only a contingency table is recounted per shuffle)."""

EXACT_MAX_SAMPLES = 20_000
"""Exact mode holds an ``(n, n)`` float64 distance matrix, which hdbscan copies about three times
(20,000 samples: 3.2 GB a copy)."""

_FULL_SVD_MAX = 512
"""PCA takes a full SVD when the smaller side of the data is at most this (well under a second on two
CPU cores); above it, a seeded randomized SVD."""
_PCA_OVERSAMPLE = 10
_PCA_POWER_ITERATIONS = 4
_PCA_SEED = 0

_CANCELLATION = 1e-4
"""In exact mode a squared distance below this fraction of ``|x|^2 + |y|^2`` (centred vectors) is
recomputed from the differences: there the Gram formula ``|x|^2 + |y|^2 - 2 x.y`` has lost too many
digits (near-duplicates, and the diagonal, which must be exactly 0)."""
_BLOCK_ELEMENTS = 1 << 22
"""Size of one block of distances (or of gathered differences) on the device, in elements."""


# --------------------------------------------------------------------------------------------------
# Shared helpers

def _checked_labels(layer: LayerData, samples: int) -> np.ndarray:
    """The layer's class labels, after checking they match the ``samples`` vectors."""
    labels = np.asarray(layer.labels)
    if samples == 0:
        raise BnprobeError(f"layer {layer.name}: no samples were captured; probe at least one batch")
    if labels.shape != (samples,):
        raise BnprobeError(f"layer {layer.name}: {labels.shape[0] if labels.ndim else 0} labels for "
                           f"{samples} vectors; capture labels and vectors from the same samples")
    return labels


def _majority_counts(labels: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """For each column of the boolean ``(samples, groups)`` ``membership``, its most common class's count."""
    _, codes = np.unique(labels, return_inverse=True)
    onehot = np.zeros((labels.shape[0], int(codes.max()) + 1))
    onehot[np.arange(labels.shape[0]), codes] = 1.0
    return (onehot.T @ membership.astype(np.float64)).max(axis=0)


# --------------------------------------------------------------------------------------------------
# PCA and exact distances, in torch on the run's device

def _float64_on(vectors: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    import torch
    if isinstance(vectors, torch.Tensor):
        return vectors.to(device=device, dtype=torch.float64)
    return torch.from_numpy(np.ascontiguousarray(vectors)).to(device=device, dtype=torch.float64)


def pca_reduce(vectors: np.ndarray | torch.Tensor, dims: int, device: torch.device) -> tuple[np.ndarray, float]:
    """Project ``(samples, features)`` onto its top ``dims`` principal components, on ``device``.

    Returns the projection (float32) and the fraction of the variance it keeps.  Small data get an
    exact PCA from the smaller Gram matrix; larger data a randomized SVD (Halko et al. 2011, with
    power iterations) whose Gaussian test matrix is drawn on the CPU from a fixed seed, so the result
    is the same on every run and, up to rounding, on every device.  Distances are all that HDBSCAN
    uses, so the components' signs do not matter.  Callers skip the PCA when
    ``dims >= min(samples, features)``: then it would keep every distance anyway.
    """
    import torch

    # float64 throughout: in float32 the result moved by ~1e-3 with the BLAS thread count (which MKL
    # varies with machine load), enough to flip HDBSCAN labels between two runs of the same study.
    x = _float64_on(vectors, device)
    x = x - x.mean(dim=0)
    total = float(x.square().sum())
    smaller = min(x.shape)
    rank = min(dims + _PCA_OVERSAMPLE, smaller)
    if smaller <= _FULL_SVD_MAX or 2 * rank >= smaller:
        projected, kept_variance = _pca_by_gram(x, dims)
    else:
        generator = torch.Generator().manual_seed(_PCA_SEED)
        sketch = x @ torch.randn(x.shape[1], rank, generator=generator, dtype=torch.float64).to(device)
        for _ in range(_PCA_POWER_ITERATIONS):
            basis = torch.linalg.qr(sketch).Q
            sketch = x @ (x.T @ basis)
        basis = torch.linalg.qr(sketch).Q
        # SVD of the tall (features, rank) transpose: LAPACK is far faster on it than on the wide one.
        components, singular, _ = torch.linalg.svd((basis.T @ x).T, full_matrices=False)
        projected = x @ components[:, :dims]
        kept_variance = float(singular[:dims].double().square().sum())
    kept = kept_variance / total if total > 0 else 1.0
    return projected.float().cpu().numpy(), min(kept, 1.0)


def _pca_by_gram(x: torch.Tensor, dims: int) -> tuple[torch.Tensor, float]:
    """Exact PCA of centred ``x`` from the eigenvectors of its smaller Gram matrix, in float64.

    ``x^T x`` (features <= samples) or ``x x^T`` (otherwise) is at most ``_FULL_SVD_MAX`` square here;
    its symmetric eigendecomposition is much cheaper than an SVD of ``x`` itself.
    """
    import torch

    if x.shape[1] <= x.shape[0]:
        values, vectors = torch.linalg.eigh(x.T @ x)
        projected = x @ vectors[:, -dims:].flip(1)
    else:
        values, vectors = torch.linalg.eigh(x @ x.T)
        projected = vectors[:, -dims:].flip(1) * values[-dims:].flip(0).clamp_min(0).sqrt()
    return projected, float(values[-dims:].clamp_min(0).sum())


def euclidean_distances(vectors: np.ndarray | torch.Tensor, device: torch.device) -> np.ndarray:
    """The full ``(samples, samples)`` float64 Euclidean distance matrix, computed on ``device``.

    Exact mode feeds this to ``hdbscan.HDBSCAN(metric="precomputed")``, whose labels must equal
    hdbscan's own on the vectors; so the distances have to be as good as hdbscan's float64 ones.  They
    come from the Gram formula in float64 (one matrix product per block of rows, fast on a GPU and with
    CPU BLAS) on centred vectors, which keeps the cancellation small; pairs where it is still too large
    (see ``_CANCELLATION``) are recomputed from their differences.  Only the upper triangle is computed
    and then mirrored, so the matrix is exactly symmetric with an exactly zero diagonal.
    """
    import torch

    x = _float64_on(vectors, device)
    x = x - x.mean(dim=0)
    norms = x.square().sum(dim=1)
    samples, features = x.shape
    out = np.empty((samples, samples), dtype=np.float64)
    rows_per_block = max(1, _BLOCK_ELEMENTS // max(samples, 1))
    pairs_per_chunk = max(1, _BLOCK_ELEMENTS // max(features, 1))
    for start in range(0, samples, rows_per_block):
        stop = min(start + rows_per_block, samples)
        rows, cols = x[start:stop], x[start:]
        scale = norms[start:stop, None] + norms[None, start:]
        squared = scale - 2.0 * (rows @ cols.T)
        close_r, close_c = torch.nonzero(squared <= _CANCELLATION * scale, as_tuple=True)
        for lo in range(0, close_r.numel(), pairs_per_chunk):
            r, c = close_r[lo:lo + pairs_per_chunk], close_c[lo:lo + pairs_per_chunk]
            squared[r, c] = (rows[r] - cols[c]).square().sum(dim=1)
        block = squared.clamp_(min=0.0).sqrt_()
        square = block[:, :stop - start]
        block[:, :stop - start] = torch.triu(square) + torch.triu(square, diagonal=1).T
        block = block.cpu().numpy()
        out[start:stop, start:] = block
        out[start:, start:stop] = block.T
    return out


# --------------------------------------------------------------------------------------------------
# HDBSCAN

@dataclass
class Reduced:
    """What HDBSCAN clusters: the finite samples after the PCA, or exact mode's distance matrix."""

    points: np.ndarray
    """``(finite samples, dims)`` vectors, or their ``(n, n)`` distances in exact mode."""
    finite: np.ndarray
    """Which of all the samples had only finite values (the others are noise)."""
    dims: int
    explained_variance: float
    tree: np.ndarray | None = None
    """The ``knn`` backend's spanning tree of ``points`` (:func:`mutual_reachability_tree`), when the
    device half built it; ``None`` builds it in :meth:`HdbscanProbe.cluster_reduced`."""


@dataclass
class Clustering:
    """What one HDBSCAN run of :class:`HdbscanProbe` found."""

    labels: np.ndarray
    """Cluster of each sample, ``-1`` for noise (non-finite samples included)."""
    persistence: np.ndarray
    """hdbscan's ``cluster_persistence_``, one value per cluster."""
    dbcv: float
    """hdbscan's ``relative_validity_``; NaN without clusters."""
    dims: int
    """Dimensions clustered (after the PCA, if any)."""
    explained_variance: float
    """Fraction of the variance the PCA kept (1.0 without PCA)."""


@register_probe("hdbscan")
class HdbscanProbe(Probe):
    """HDBSCAN on a layer's per-sample vectors: how many dense groups, and do they match the classes?

    Parameters
    ----------
    min_cluster_size:
        Smallest group HDBSCAN calls a cluster (default 10).  A study probes up to 5,000 samples
        (1,797 with the built-in digits), typically of 10 classes, so a class holds 180-500: 10 is
        far below a class, so a class -- or a class's well-separated sub-group -- can form a
        cluster, while chance clumps of a few near-duplicates stay noise (hdbscan's own default, 5,
        lets those through more often).
    min_samples:
        Neighbours that make a point a core point (how conservative the density estimate is); ``None``
        uses ``min_cluster_size``, hdbscan's own default.
    dims:
        PCA dimensions before clustering, an integer, ``None`` (the raw vectors) or ``"auto"`` (the
        default): ``DEFAULT_DIMS`` (50) normally, ``None`` with ``exact=True``, because exact mode
        exists to reproduce HDBSCAN on the representation itself.  When ``dims`` is at least the number
        of samples or of features, the vectors are clustered as they are (a PCA would keep every
        distance).  The PCA runs in torch on the run's device and is deterministic.
    backend:
        How the default mode (``exact=False``) builds HDBSCAN's minimum spanning tree of mutual
        reachability, which hdbscan then condenses and cuts into clusters as always.  ``"knn"``: each
        sample's nearest neighbours found exactly by brute force in torch, on the run's device,
        joined across well-separated groups by their exact lightest links
        (:mod:`bnprobe.probes._knn_tree`). Its tree is hdbscan's exact one, so are its labels (up to
        ties); against hdbscan's default approximate tree they agree to an ARI of 0.998 or more on
        bench/hdbscan_probe.py's vectors at 5,000 to 20,000 samples, and it is 1.6-2.2x faster on
        two CPU cores.  ``"hdbscan"``: hdbscan's own
        tree-based search (its ``"best"`` algorithm: an approximate Boruvka spanning tree up to 60
        dimensions, exact Prim above), the reference and the default (until the whole suite has run
        on ``"knn"`` as the default, with the probe's version raised).
        Exact mode ignores it.
    exact:
        ``False`` (default): the spanning tree of ``backend``.  ``True``: the full
        pairwise distance matrix is computed in float64 on the run's device and clustered with
        ``metric="precomputed"`` (an exact Prim tree), which gives the labels of
        ``hdbscan.HDBSCAN()`` on the same vectors whenever that is exact too -- more than 60
        dimensions, e.g. the raw vectors -- tens of times faster on CPU-sized cores and hundreds of
        times on a GPU for 5,000 x 4,096 (``bench/hdbscan_probe.py``).  It needs memory for an
        ``n x n`` matrix, so it takes at most ``EXACT_MAX_SAMPLES`` samples.

    Metrics
    -------
    ``n_clusters``, ``noise_fraction`` (share of samples labelled noise); ``ari``, ``nmi`` and ``ami``
    (scikit-learn, against the class labels, on *all* samples with noise as one more cluster, so
    leaving samples as noise costs score; ARI and AMI are corrected for chance, NMI is not);
    ``ari_chance_mean``, ``ari_chance_std`` and ``ari_chance_p``: the ARI the same clusters get against
    ``permutations`` shuffles of the labels (seeded by ``seed``; the clustering is not redone), and the
    permutation p-value ``(1 + #{shuffled ARI >= ARI}) / (permutations + 1)`` that the clusters follow
    the classes no better than chance (``permutations=0``: null); ``purity`` (over the non-noise samples: the share that
    belongs to its cluster's most common class); ``persistence`` (mean of hdbscan's
    ``cluster_persistence_``, how long the clusters live in the hierarchy, 0-1); ``dbcv`` (hdbscan's
    ``relative_validity_``, the DBCV index computed on the minimum spanning tree, -1 to 1; always
    affordable, since the tree is a by-product of the clustering); ``dims_used`` (dimensions
    clustered) and ``explained_variance`` (variance the PCA kept, 1.0 without PCA).  ``purity``,
    ``persistence`` and ``dbcv`` are NaN when there is no cluster.

    Samples with a non-finite value (a diverged run) are labelled noise and left out of the
    clustering; with fewer clusterable samples than ``min_cluster_size`` -- or vectors that are all
    the same, a dead layer -- every sample is noise: ``n_clusters`` 0, ``noise_fraction`` 1.
    """

    description: ClassVar[str] = "HDBSCAN clusters of the representation vectors vs the class labels"
    needs: ClassVar[Need] = "vectors"
    key_metric: ClassVar[str] = "ari"
    metrics: ClassVar[dict[str, Metric]] = {
        "n_clusters": Metric("number of clusters HDBSCAN found", "0 to samples / min_cluster_size"),
        "noise_fraction": Metric("share of samples HDBSCAN labelled noise (non-finite samples included)", "0 to 1"),
        "ari": Metric("adjusted Rand index of the clusters against the class labels, on all samples with noise as "
                      "one more cluster (scikit-learn)", "-0.5 to 1 (0: chance)", "higher is better"),
        "nmi": Metric("normalised mutual information of the clusters and the class labels, on all samples with "
                      "noise as one more cluster (scikit-learn); not corrected for chance", "0 to 1",
                      "higher is better"),
        "ami": Metric("adjusted mutual information of the clusters and the class labels, on all samples with noise "
                      "as one more cluster (scikit-learn, arithmetic normalisation as nmi's)",
                      "at most 1 (0: chance)", "higher is better"),
        "ari_chance_mean": Metric("mean ARI of the same clusters against shuffled class labels (the clustering is "
                                  "not redone); null with permutations=0", "about 0"),
        "ari_chance_std": Metric("standard deviation of that ARI over the shuffles; null with permutations=0",
                                 "0 or more"),
        "ari_chance_p": Metric("permutation p-value of the ARI: (1 + shuffles scoring at least as high) / "
                               "(shuffles + 1); null with permutations=0", "1/(permutations+1) to 1"),
        "purity": Metric("over the non-noise samples, the share that belongs to its cluster's most common class; "
                         "null without clusters", "0 to 1", "higher is better"),
        "persistence": Metric("mean of hdbscan's cluster_persistence_: how long the clusters live in the "
                              "hierarchy; null without clusters", "0 to 1", "higher is better"),
        "dbcv": Metric("hdbscan's relative_validity_, the DBCV index on the minimum spanning tree; null without "
                       "clusters", "-1 to 1", "higher is better"),
        "dims_used": Metric("dimensions clustered: the PCA's, or the vectors' own without PCA", "1 to features"),
        "explained_variance": Metric("fraction of the variance the PCA kept (1 without PCA)", "0 to 1",
                                     "higher is better"),
    }

    def __init__(self, *, min_cluster_size: int = 10, min_samples: int | None = None,
                 dims: int | str | None = "auto", backend: str = "hdbscan", exact: bool = False,
                 permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0, **unknown: Any) -> None:
        super().__init__(**unknown)
        owner = f"probe {self.name}"
        self.min_cluster_size = check_int(owner, "min_cluster_size", min_cluster_size, minimum=2)
        self.min_samples = check_int(owner, "min_samples", min_samples, minimum=1, allow_none=True)
        if isinstance(dims, str) and dims != "auto":
            raise BnprobeError(f"{owner}: dims must be an integer, None or 'auto', got {dims!r}")
        self.dims = dims if dims == "auto" else check_int(owner, "dims", dims, minimum=1, allow_none=True)
        if not isinstance(exact, bool):
            raise BnprobeError(f"{owner}: exact must be true or false, got {exact!r}")
        self.exact = exact
        self.backend = check_choice(owner, "backend", backend, BACKENDS)
        self.permutations = check_int(owner, "permutations", permutations, minimum=0)
        self.seed = check_int(owner, "seed", seed, minimum=0)

    @property
    def pca_dims(self) -> int | None:
        """The PCA dimensions ``dims`` stands for in this mode (``None``: no PCA)."""
        if self.dims == "auto":
            return None if self.exact else DEFAULT_DIMS
        return self.dims

    def cluster(self, vectors: np.ndarray | torch.Tensor, device: torch.device) -> Clustering:
        """Run this probe's HDBSCAN on ``(samples, features)`` vectors, PCA first, on ``device``."""
        return self.cluster_reduced(self.reduce(vectors, device))

    def reduce(self, vectors: np.ndarray | torch.Tensor, device: torch.device) -> Reduced:
        """The linear-algebra half of :meth:`cluster`, on ``device``: PCA, or exact mode's distances."""
        import torch

        vectors = torch.as_tensor(vectors)
        finite_rows = torch.isfinite(vectors).all(dim=1)
        points = vectors[finite_rows] if not bool(finite_rows.all()) else vectors
        finite = finite_rows.cpu().numpy()
        if self.exact and points.shape[0] > EXACT_MAX_SAMPLES:
            raise BnprobeError(f"probe {self.key}: {points.shape[0]} samples, but exact mode holds an "
                               f"n x n matrix and takes at most {EXACT_MAX_SAMPLES}; use exact=false or "
                               "probe fewer samples")
        dims, kept = points.shape[1], 1.0
        if self.pca_dims is not None and self.pca_dims < min(points.shape):
            points, kept = pca_reduce(points, self.pca_dims, device)
            dims = self.pca_dims
        tree = None
        if self.exact and points.shape[0] >= self.min_cluster_size:
            points = euclidean_distances(points, device)
        elif self.backend == "knn" and self._clusterable(points.shape[0]):
            tree = mutual_reachability_tree(torch.as_tensor(points).to(device), self._core_neighbours)
        if isinstance(points, torch.Tensor):
            points = points.cpu().numpy()
        return Reduced(points, finite, dims, kept, tree)

    def _clusterable(self, samples: int) -> bool:
        """Whether HDBSCAN can find a cluster among ``samples``: one ``min_cluster_size`` group, each core
        point with its ``min_samples`` neighbours (else every sample is noise)."""
        return samples >= self.min_cluster_size and samples > self._core_neighbours

    @property
    def _core_neighbours(self) -> int:
        """The neighbour that sets a sample's core distance: ``min_samples``, else ``min_cluster_size``."""
        return self.min_cluster_size if self.min_samples is None else self.min_samples

    def cluster_reduced(self, reduced: Reduced) -> Clustering:
        """The HDBSCAN half of :meth:`cluster`, on the CPU (one core; hdbscan is serial per call)."""
        import hdbscan

        labels = np.full(reduced.finite.shape[0], -1, dtype=np.intp)
        if not self._clusterable(reduced.points.shape[0]):
            return Clustering(labels, np.zeros(0), math.nan, reduced.dims, reduced.explained_variance)
        params: dict[str, Any] = {"min_cluster_size": self.min_cluster_size,
                                  "min_samples": self.min_samples, "gen_min_span_tree": True}
        if self.exact:
            model = hdbscan.HDBSCAN(metric="precomputed", **params).fit(reduced.points)
        elif self.backend == "knn":
            model = _from_tree(reduced, self.min_cluster_size, self._core_neighbours)
        else:
            # core_dist_n_jobs=-1: hdbscan's parallel core distances (above 16,384 samples) on every core.
            model = hdbscan.HDBSCAN(core_dist_n_jobs=-1, **params).fit(reduced.points)
        labels[reduced.finite] = model.labels_
        dbcv = float(model.relative_validity_) if model.labels_.max() >= 0 else math.nan
        return Clustering(labels, np.asarray(model.cluster_persistence_, dtype=np.float64), dbcv, reduced.dims,
                          reduced.explained_variance)

    def prepare(self, layer: LayerData, context: ProbeContext) -> tuple[Reduced, np.ndarray]:
        """PCA (or distances) of the layer's vectors on the run's device, with the labels to score against.

        Without device work to do (``dims=None``, the ``hdbscan`` backend) the vectors stay on the host; when the
        device runs out of memory, the PCA runs on the CPU instead (float64 throughout, so the same
        numbers up to rounding).
        """
        import torch

        on_device = self.exact or self.pca_dims is not None or self.backend == "knn"
        device = context.device if on_device else torch.device("cpu")
        try:
            vectors = layer.vectors_tensor(device)
            labels = _checked_labels(layer, vectors.shape[0])
            return self.reduce(vectors, device), labels
        except torch.cuda.OutOfMemoryError:
            vectors = None  # drop the device copy before the host one is read
            vectors = layer.vectors()
            return self.reduce(vectors, torch.device("cpu")), _checked_labels(layer, vectors.shape[0])

    def conclude(self, prepared: tuple[Reduced, np.ndarray]) -> dict[str, float]:
        """Cluster the reduced vectors and score the clusters against the labels."""
        from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

        reduced, labels = prepared
        found = self.cluster_reduced(reduced)
        clustered = found.labels >= 0
        n_clusters = int(found.labels.max()) + 1
        purity = math.nan
        if n_clusters:
            members = found.labels[clustered, None] == np.arange(n_clusters)
            purity = float(_majority_counts(labels[clustered], members).sum() / clustered.sum())
        ari = float(adjusted_rand_score(labels, found.labels))
        return {
            "n_clusters": float(n_clusters),
            "noise_fraction": float(1.0 - clustered.mean()),
            "ari": ari,
            "nmi": float(normalized_mutual_info_score(labels, found.labels)),
            "ami": float(adjusted_mutual_info_score(labels, found.labels)),
            **ari_chance(labels, found.labels, ari, self.permutations, self.seed),
            "purity": purity,
            "persistence": float(found.persistence.mean()) if n_clusters else math.nan,
            "dbcv": found.dbcv,
            "dims_used": float(found.dims),
            "explained_variance": found.explained_variance,
        }


@dataclass
class _TreeClusters:
    """What :func:`_from_tree` found, under the names of ``hdbscan.HDBSCAN``'s fitted attributes."""

    labels_: np.ndarray
    cluster_persistence_: np.ndarray
    relative_validity_: float


def _from_tree(reduced: Reduced, min_cluster_size: int, core_neighbours: int) -> _TreeClusters:
    """hdbscan's own clusters, persistence and DBCV from the ``knn`` backend's spanning tree.

    The single linkage, condensed tree, cluster selection and ``relative_validity_`` are hdbscan's
    functions run on the given tree, the steps ``hdbscan.HDBSCAN.fit`` takes after building its own.
    """
    import hdbscan
    from hdbscan._hdbscan_linkage import label
    from hdbscan.hdbscan_ import _tree_to_labels

    tree = reduced.tree
    if tree is None:
        import torch
        tree = mutual_reachability_tree(torch.from_numpy(np.ascontiguousarray(reduced.points)), core_neighbours)
    labels, _, persistence, _, _ = _tree_to_labels(None, label(tree), min_cluster_size)
    validity = hdbscan.HDBSCAN(gen_min_span_tree=True)
    validity.labels_, validity._min_spanning_tree = labels, tree
    dbcv = float(validity.relative_validity_) if labels.max() >= 0 else math.nan
    return _TreeClusters(labels, persistence, dbcv)


# --------------------------------------------------------------------------------------------------
# Binary activation patterns

def channel_activity(vectors: np.ndarray, shape: tuple[int, ...], reduce: str, layer: str) -> np.ndarray:
    """One activity value per sample and channel, ``(samples, channels)``.

    ``vectors`` are either whole feature maps flattened (``C*H*W`` values, ``shape == (C, H, W)``),
    reduced here over the positions with ``reduce`` (``"mean"`` or ``"max"``), or already one value
    per channel (``C`` values: a linear layer, or capture's channel means), used as they are.  Channel
    means cannot give a channel's maximum, so ``reduce="max"`` on them is an error.
    """
    samples, features = vectors.shape
    channels = shape[0] if shape else features
    positions = math.prod(shape[1:])
    if features == channels * positions:
        maps = vectors.reshape(samples, channels, positions)
        return maps.max(axis=2) if reduce == "max" else maps.mean(axis=2)
    if features == channels:
        if reduce == "max":
            raise BnprobeError(f"layer {layer}: reduce='max' needs whole feature maps, but the layer was "
                               f"captured as {channels} channel means; use reduce='mean'")
        return vectors
    raise BnprobeError(f"layer {layer}: {features} features fit neither the {channels} channels nor the "
                       f"{channels * positions} values of shape {shape}")


DEGENERATE_SHARE = 0.95
"""``binary_patterns`` notes its patterns as degenerate when the channels' active sets hold on average
at least this share of the samples (then each set is nearly every sample and its purity nearly the
largest class's share), or when one binary pattern -- which channels are active -- holds at least this
share of the samples (the patterns barely tell the samples apart)."""

ALWAYS_ON_NOTE = "every channel on for every sample (purity = largest class's share)"
MOSTLY_ON_NOTE = f"channels on for >= {DEGENERATE_SHARE:.0%} of samples on average (purity near largest class's share)"
ONE_PATTERN_NOTE = f"one on/off pattern of the channels holds >= {DEGENERATE_SHARE:.0%} of samples"
"""The texts of ``binary_patterns``' ``degenerate`` note; fixed, so that the report gives the layers one line."""


@register_probe("binary_patterns")
class BinaryPatternsProbe(Probe):
    """Implicit clusters (Haasbroek & Davel): each channel's active set and how pure its class is.

    A channel's *activity* on a sample is the mean (``reduce="mean"``, default) or maximum (``"max"``)
    of its feature map, or the value itself for a linear layer or channel-mean capture (``"mean"``
    gives the same numbers whether capture kept whole maps or channel means).  The channel is *active*
    on a sample when that activity is above a threshold, and its *active set* -- the samples it is
    active on -- is an implicit cluster.

    The threshold, by default (``eps=None``), is the channel's own ``quantile`` of its activity over
    the probed samples, ``1 - 1/classes`` with ``quantile="auto"``: a channel is active on its top
    ``1/classes`` of the samples (its top 10 % for 10 classes), the size of one balanced class.  Why:

    * not 0 (``eps=0``, "the ReLU fired", the probe's rule before): the spatial mean of a ReLU map is
      above 0 as soon as one position fired, which on a trained CNN is every sample, so every channel
      is active on every sample and ``active_set_purity`` is just the largest class's share, the same
      at every layer of every variant;
    * relative to the channel, not one threshold for the layer: channel scales differ by orders of
      magnitude without BatchNorm (and the scale is what BatchNorm changes), so a layer-wide threshold
      would turn its large channels always on and its small ones always off.  A quantile does not move
      with a channel's scale or offset, so BN and no-BN variants compare on which samples excite a
      channel most, not on how large it is;
    * the top ``1/classes``, not the median or the top-k channels per sample: a set of half the samples
      cannot be purer than ``2/classes``, so a perfect one-class detector would score 0.2 of 10
      classes; the top ``1/classes`` lets it score 1.  Ranking channels against each other per sample
      (top-k) compares their scales again.

    So ``active_set_size`` is about ``1/classes`` by construction (less for a channel tied at its
    threshold, e.g. exactly 0 on most samples), and a channel constant over the samples (dead) is
    active on none.  A number ``eps`` (>= 0) takes the absolute rule instead, activity above ``eps``
    at every channel: ``binary_patterns(eps=0)`` is the probe's old default.

    When the patterns are degenerate anyway -- the active sets hold on average at least
    ``DEGENERATE_SHARE`` of the samples, or one binary pattern holds that share of them -- the
    layer gets the note ``degenerate`` (:meth:`notes`), which the report prints as one line.

    Parameters
    ----------
    eps:
        ``None`` (default): the per-channel ``quantile`` threshold above.  A number >= 0: one absolute
        threshold, activity above ``eps`` (``eps=0``: the probe's old default, "the ReLU fired").
    quantile:
        With ``eps=None``, the quantile of each channel's activity over the probed samples that it must
        exceed, in (0, 1); ``"auto"`` (default): ``1 - 1/classes``.  Give it or ``eps``, not both.
    reduce:
        ``"mean"`` (default) or ``"max"`` over a feature map's positions; ``"max"`` needs whole maps.

    Metrics
    -------
    ``active_set_size``: mean over channels of the fraction of samples in the active set (how
    selective the channels are; 1 means always on).  ``active_set_purity``: mean, over channels with a
    non-empty active set, of the share of the active set that belongs to its most common class (1: the
    channel's active set is one class; about 1/classes for balanced classes: it ignores the class);
    NaN when every channel is dead.  ``dead_channel_fraction``: fraction of channels active on no sample.
    """

    version: ClassVar[int] = 2
    """2: the per-channel quantile threshold by default (version 1's default was ``eps=0``)."""
    description: ClassVar[str] = ("per-channel active sets (implicit clusters: by default each channel's top "
                                  "1/classes of the samples) and their class purity")
    needs: ClassVar[Need] = "vectors"
    key_metric: ClassVar[str] = "active_set_purity"
    metrics: ClassVar[dict[str, Metric]] = {
        "active_set_size": Metric("mean over channels of the fraction of samples the channel is active on: "
                                  "activity (mean over positions) above the channel's own quantile 1 - 1/classes "
                                  "over the probed samples by default, so about 1/classes; above eps with eps set",
                                  "0 to 1"),
        "active_set_purity": Metric("mean over live channels of the share of the active set in its most common "
                                    "class: by default, how much a channel's top 1/classes of the samples are one "
                                    "class; null when every channel is dead",
                                    "0 to 1 (about 1/classes: chance)", "higher is better"),
        "dead_channel_fraction": Metric("fraction of channels active on no probed sample (by default: constant "
                                        "over the samples)", "0 to 1"),
    }

    def __init__(self, *, eps: float | None = None, quantile: float | str = "auto", reduce: str = "mean",
                 **unknown: Any) -> None:
        super().__init__(**unknown)
        owner = f"probe {self.name}"
        self.eps = None if eps is None else check_float(owner, "eps", eps, minimum=0.0)
        if quantile != "auto":
            if isinstance(quantile, str):
                raise BnprobeError(f"{owner}: quantile must be a number in (0, 1) or 'auto', got {quantile!r}")
            quantile = check_float(owner, "quantile", quantile)
            if not 0.0 < quantile < 1.0:
                raise BnprobeError(f"{owner}: quantile must be in (0, 1), got {quantile}")
            if self.eps is not None:
                raise BnprobeError(f"{owner}: give eps (an absolute threshold) or quantile (one per channel), "
                                   "not both")
        self.quantile = quantile
        self.reduce = check_choice(owner, "reduce", reduce, ("mean", "max"))

    def active(self, layer: LayerData) -> tuple[np.ndarray, np.ndarray]:
        """The boolean ``(samples, channels)`` active patterns of ``layer``, and its labels."""
        vectors = layer.vectors()
        labels = _checked_labels(layer, vectors.shape[0])
        activity = channel_activity(vectors, layer.shape, self.reduce, layer.name)
        if self.eps is not None:
            return activity > self.eps, labels
        quantile = self.quantile
        if quantile == "auto":
            quantile = 1.0 - 1.0 / max(np.unique(labels).size, 2)
        with np.errstate(invalid="ignore"):  # a non-finite channel gets a NaN threshold: active on none
            return activity > np.quantile(activity, quantile, axis=0), labels

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """Split the samples by each channel's activity and score the splits against the labels."""
        active, labels = self.active(layer)
        sizes = active.sum(axis=0)
        live = sizes > 0
        purity = (_majority_counts(labels, active[:, live]) / sizes[live]).mean() if live.any() else math.nan
        return {
            "active_set_size": float(active.mean()),
            "active_set_purity": float(purity),
            "dead_channel_fraction": float(1.0 - live.mean()),
        }

    def notes(self, layer: LayerData | None, context: ProbeContext) -> dict[str, str]:
        """``degenerate`` when the layer's patterns cannot carry class information (class docstring)."""
        if layer is None:
            return {}
        active, _ = self.active(layer)
        note = degenerate_note(active)
        return {"degenerate": note} if note is not None else {}


def degenerate_note(active: np.ndarray) -> str | None:
    """Why the boolean ``(samples, channels)`` patterns ``active`` are degenerate, or None if they are not."""
    if active.all():
        return ALWAYS_ON_NOTE
    if active.mean() >= DEGENERATE_SHARE:
        return MOSTLY_ON_NOTE
    _, counts = np.unique(np.packbits(active, axis=1), axis=0, return_counts=True)
    if counts.max() >= DEGENERATE_SHARE * active.shape[0]:
        return ONE_PATTERN_NOTE
    return None
