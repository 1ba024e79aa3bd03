"""``cka`` and ``cka_matrix``: how similar is a layer without BatchNorm to the same layer with it, and
to every other layer of the BatchNorm model?

Linear centred kernel alignment (Kornblith et al., *Similarity of Neural Network Representations
Revisited*, ICML 2019) between the per-sample vectors ``X`` of a layer in the ``bn`` run and ``Y`` of
the same layer in this run's variant, same seed, same probed samples::

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)        X, Y column-centred

It is 1 for representations that differ only by a rotation and an isotropic scaling, and 0 when the
two share no linear structure.  In the ``bn`` run the layer is compared with itself (1 by definition,
computed all the same, which checks the arithmetic).

The sums are taken in float64 on the run's device in blocks, so device memory never holds more than
one block of either input beside the products.  Which products depends on the shape:

* feature form, ``X^T X``, ``Y^T Y`` and ``Y^T X`` (``p*p + q*q + p*q`` values), when features are few;
* Gram form, the centred ``n x n`` Gram matrices ``K = X X^T`` and ``L = Y Y^T`` (``2*n*n`` values),
  when features outnumber samples: ``CKA = <K, L> / (||K||_F ||L||_F)``, the same number.

``cka_matrix`` (:class:`CKAMatrixProbe`) computes the same number for every pair of a layer of the
run and a layer of the ``bn`` run, and the report draws the matrix as a heatmap; :func:`cka_matrix`
does the same for any two captures, such as two seeds of one variant.

* ``_linear`` -- the arithmetic (:func:`linear_cka`, :func:`cka_matrix_values`);
* ``_probe`` -- the ``cka`` probe; ``_matrix`` -- the ``cka_matrix`` probe and :func:`cka_matrix`.

This is an ordinary installed package: its ``pyproject.toml`` names :class:`CKAProbe` and
:class:`CKAMatrixProbe` in the ``bnprobe.probes`` entry-point group, and bnprobe finds them there.
"""

from bnprobe_cka._linear import cka_matrix_values, linear_cka
from bnprobe_cka._matrix import CKAMatrix, CKAMatrixProbe, cka_matrix
from bnprobe_cka._probe import CKAProbe

__all__ = ["CKAMatrix", "CKAMatrixProbe", "CKAProbe", "cka_matrix", "cka_matrix_values", "linear_cka"]
