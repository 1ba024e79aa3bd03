"""HDBSCAN's spanning tree from an exact nearest-neighbour graph, computed in torch on the run's device.

HDBSCAN clusters the minimum spanning tree of the *mutual reachability* graph, whose edge ``a-b``
weighs ``max(core(a), core(b), |a - b|)``, a point's core distance being its distance to its
``min_samples``-th nearest other point (hdbscan's convention).  hdbscan builds that tree with a
KD-tree Boruvka search, which prunes little at the PCA's 50 dimensions: at 50,000 samples its
nearest-neighbour queries are two thirds of the probe's time (docs/benchmarks.md).  Here instead:

1. each point's ``neighbours`` nearest other points, found by brute force in blocks of matrix
   products (float64, so the choice does not move with the BLAS thread count; fast on a GPU and
   with CPU BLAS), their distances then recomputed from the differences, exactly;
2. Boruvka's rounds on those edges, as far as an edge is sure to be the tree's: a component's
   lightest listed edge out of it is a tree edge when no unlisted edge can be lighter;
3. the trees that are left (typically one per well-separated class) joined by one more
   brute-force pass, which finds the lightest edge between every two of them.

So the tree is HDBSCAN's exact one (hdbscan's ``approx_min_span_tree=False``), up to which of two
equally heavy edges it takes; hdbscan's default Boruvka tree is an approximation of it.  At 50,000
samples of 50 dimensions it takes 16 s on two CPU cores against 27 s for hdbscan's own search
(docs/benchmarks.md), and on a GPU its three passes are matrix products.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

NEIGHBOUR_FACTOR = 2
"""Nearest neighbours kept per point, in multiples of ``min_samples`` (at least ``MIN_NEIGHBOURS``)."""
MIN_NEIGHBOURS = 15
_BLOCK_ELEMENTS = 1 << 24
"""Distances held at once on the device (a block of rows against every point), in elements."""
_TINY = np.nextafter(0.0, 1.0)
"""Stands in for a zero weight (duplicates) in scipy's graphs, which read 0 as "no edge"."""


def mutual_reachability_tree(points: torch.Tensor, min_samples: int) -> np.ndarray:
    """HDBSCAN's spanning tree of ``(n, dims)`` points: ``(n - 1, 3)`` rows ``[a, b, weight]``, lightest first.

    ``min_samples`` must be below ``n``.  The rows are what ``hdbscan``'s single linkage takes.
    """
    import torch

    x = points.to(torch.float64)
    x = x - x.mean(dim=0)
    n = x.shape[0]
    k = min(n - 1, max(NEIGHBOUR_FACTOR * min_samples, MIN_NEIGHBOURS))
    index, distance = nearest_neighbours(x, k)
    core = distance[:, min_samples - 1].copy()
    # an edge to a point outside a's list is at least as long as a's farthest listed neighbour
    unlisted = distance[:, -1] if k < n - 1 else np.full(n, np.inf)
    rows = np.repeat(np.arange(n), k)
    cols = index.ravel()
    weight = np.maximum(np.maximum(core[rows], core[cols]), distance.ravel())
    forest = _certified_forest(np.concatenate([rows, cols]), np.concatenate([cols, rows]),
                               np.concatenate([weight, weight]), unlisted, n)
    parts, component = _components(forest, n)
    if parts > 1:
        forest = np.concatenate([forest, _bridges(x, core, component, parts)])
    return forest[np.argsort(forest[:, 2], kind="stable")]


def _certified_forest(a: np.ndarray, b: np.ndarray, weight: np.ndarray, unlisted: np.ndarray,
                      n: int) -> np.ndarray:
    """Boruvka's rounds on the listed edges ``a -> b``, as far as they are sure to be the tree's.

    A component's lightest listed edge out of it is the lightest of all when it weighs no more than
    ``unlisted`` of any of its points (the least an unlisted edge can weigh), and then it is a tree
    edge (the cut property).  Rounds go on while some component can be sure; the rest is bridged.
    """
    order = np.argsort(weight, kind="stable")
    a, b, weight = a[order], b[order], weight[order]
    forest = np.zeros((0, 3))
    while True:
        parts, component = _components(forest, n)
        if parts == 1:
            return forest
        leaving = component[a] != component[b]
        first = np.unique(component[a[leaving]], return_index=True)
        owners, at = first[0], np.flatnonzero(leaving)[first[1]]
        bound = np.full(parts, np.inf)
        np.minimum.at(bound, component, unlisted)
        sure = weight[at] <= bound[owners]
        if not sure.any():
            return forest
        found = np.column_stack([a[at[sure]], b[at[sure]], weight[at[sure]]])
        forest = _spanning_forest(np.concatenate([forest, found]), n)


def _spanning_forest(edges: np.ndarray, n: int) -> np.ndarray:
    """A minimum spanning forest of the ``[a, b, weight]`` rows (drops the cycles that ties can close)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    a, b = edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64)
    low, high = np.minimum(a, b), np.maximum(a, b)
    pair, first = np.unique(low * n + high, return_index=True)
    graph = coo_matrix((np.maximum(edges[first, 2], _TINY), (pair // n, pair % n)), shape=(n, n)).tocsr()
    tree = minimum_spanning_tree(graph).tocoo()
    weight = np.where(tree.data <= _TINY, 0.0, tree.data)
    return np.column_stack([tree.row, tree.col, weight]).astype(np.float64)


def _components(forest: np.ndarray, n: int) -> tuple[int, np.ndarray]:
    """How many trees the forest's ``[a, b, weight]`` rows make of ``n`` points, and each point's tree."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a, b = forest[:, 0].astype(np.int64), forest[:, 1].astype(np.int64)
    graph = coo_matrix((np.ones(a.shape[0]), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)


def nearest_neighbours(x: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows of ``x``: ``(n, k)`` indices and exact distances, nearest first."""
    import torch

    n = x.shape[0]
    left, right = _squared_distance_factors(x)
    index = np.empty((n, k), dtype=np.int64)
    distance = np.empty((n, k), dtype=np.float64)
    rows_per_block = max(1, min(_BLOCK_ELEMENTS // n, _BLOCK_ELEMENTS // (k * x.shape[1])))
    block = torch.empty(min(rows_per_block, n), n, dtype=x.dtype, device=x.device)
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        d = block[:stop - start]
        torch.mm(left[start:stop], right, out=d)  # the chosen ones' distances are recomputed exactly
        found = d.topk(k + 1, dim=1, largest=False).indices
        # drop the row itself (duplicates may rank it anywhere among the zeros), else the farthest
        own = found == torch.arange(start, stop, device=x.device)[:, None]
        own[:, -1] |= ~own.any(dim=1)
        found = found[~own].view(stop - start, k)
        exact = (x[start:stop, None, :] - x[found]).square().sum(dim=2).sqrt()
        exact, order = exact.sort(dim=1, stable=True)
        index[start:stop] = found.gather(1, order).cpu().numpy()
        distance[start:stop] = exact.cpu().numpy()
    return index, distance


def _squared_distance_factors(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``left``, ``right`` with ``left[a] @ right[:, b] == |x_a - x_b|^2`` up to rounding: one matrix product
    gives a block of squared distances, with no pass over the block to add the norms."""
    import torch

    squared = x.square().sum(dim=1, keepdim=True)
    ones = torch.ones_like(squared)
    return torch.cat([x, squared, ones], dim=1), torch.cat([-2.0 * x, ones, squared], dim=1).T.contiguous()


def _bridges(x: torch.Tensor, core: np.ndarray, component: np.ndarray, parts: int) -> np.ndarray:
    """The tree edges that join the forest's ``parts`` trees, ``(parts - 1, 3)``.

    One brute-force pass finds, for every point and every tree, the lightest mutual-reachability edge
    from the point into the tree; the lightest edge between two trees is then the least of those, and
    the trees' own minimum spanning tree over those edges completes the forest exactly.
    """
    import torch
    from scipy.sparse.csgraph import minimum_spanning_tree

    n = x.shape[0]
    order = np.argsort(component, kind="stable")  # each tree's points side by side
    bounds = np.searchsorted(component[order], np.arange(parts + 1))
    xs = x[torch.from_numpy(order).to(x.device)]
    left, right = _squared_distance_factors(xs)
    cores = torch.from_numpy(core[order]).to(x.device).square()
    best = np.full((parts, parts), np.inf)
    source = np.zeros((parts, parts), dtype=np.int64)
    rows_per_block = max(1, _BLOCK_ELEMENTS // n)
    block = torch.empty(min(rows_per_block, n), n, dtype=x.dtype, device=x.device)
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        reach = torch.mm(left[start:stop], right, out=block[:stop - start])
        torch.maximum(reach, cores, out=reach)  # squared: max(core(b), |a - b|)^2
        into = torch.stack([reach[:, bounds[t]:bounds[t + 1]].amin(dim=1) for t in range(parts)], dim=1)
        into = torch.maximum(into, cores[start:stop, None]).clamp_(min=0.0).sqrt_().cpu().numpy()
        own = component[order[start:stop]]
        into[np.arange(stop - start), own] = np.inf
        for tree in np.unique(own):
            mine = np.flatnonzero(own == tree)
            row = into[mine].argmin(axis=0)
            value = into[mine[row], np.arange(parts)]
            better = value < best[tree]
            best[tree, better] = value[better]
            source[tree, better] = order[mine[row[better]] + start]
    lighter = best <= best.T
    between = np.where(lighter, best, best.T)
    joins = minimum_spanning_tree(np.where(np.eye(parts, dtype=bool), 0.0, np.maximum(between, _TINY))).tocoo()
    edges = []
    for p, q in zip(joins.row, joins.col, strict=True):
        point, target = (source[p, q], q) if lighter[p, q] else (source[q, p], p)
        members = np.flatnonzero(component == target)
        reach = np.maximum((x[members] - x[point]).square().sum(dim=1).sqrt().cpu().numpy(), core[members])
        edges.append((point, members[reach.argmin()], between[p, q]))
    return np.array(edges, dtype=np.float64)
