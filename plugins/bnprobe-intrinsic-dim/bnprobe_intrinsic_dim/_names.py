"""The estimators this plugin offers and its smallest input: plain data, so that listing the probes
imports neither torch nor skdim."""

ESTIMATORS = ("TwoNN", "MLE", "MOM", "CorrInt", "GRIDE")
"""The global estimators of ``skdim.id`` this plugin offers: each is tested to give about 5 on a
5-dimensional linear manifold in 100 dimensions (tests/test_intrinsic_dim.py).  Left out: ``MiND_ML``
(its default ``D=10`` caps the answer at 10), ``lPCA`` (a PCA count, as the ``rank`` probe gives, and
seconds where TwoNN takes a fraction), ``KNN`` (3 on that manifold), ``DANCo``, ``ESS``, ``PH`` and
``FisherS`` (seconds to minutes at 2,000 x 100), ``TLE`` and ``MADA`` (untested)."""
MIN_DISTINCT = 20
"""Fewer distinct vectors than this give null: too few neighbourhoods for any estimator here."""
