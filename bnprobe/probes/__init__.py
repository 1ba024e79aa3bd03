"""Probes: the protocol, the registry and the built-in families, and running probes on a capture.

* ``_protocol`` -- :class:`Probe`, :class:`StreamingProbe`, :class:`ProbeContext`;
* ``_registry`` -- :func:`register_probe` and the ``bnprobe.probes`` entry points of plugins;
* ``_spec`` -- specs such as ``hdbscan(dims=20)`` and :func:`build_probes`;
* ``runner`` and ``pool`` -- :func:`run_probes` on a capture, in this process or in workers;
  ``_sample_sets`` -- one run's numbers over several sample sets (:func:`mean_over_sets`);
* ``_sparsity``, ``_clustering``, ``_attribution`` -- the built-in families (their probe classes are
  exported here); ``metrics`` -- what a probe's numbers mean (:class:`Metric`);
* ``base`` -- what a probe writer imports, in one module.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe._common": ["MODEL_SCOPE_LAYER", "REFERENCE_VARIANT"],
    "bnprobe.capture._layer_data": ["Accumulator", "LayerData"],
    "bnprobe.probes._attribution": ["AttributionProbe", "LayerAttributionProbe"],
    "bnprobe.probes._clustering": ["BinaryPatternsProbe", "HdbscanProbe"],
    "bnprobe.probes._protocol": ["Probe", "ProbeContext", "StreamingProbe"],
    "bnprobe.probes._sample_sets": ["PendingSets", "mean_over_sets"],
    "bnprobe.probes._registry": ["ProbeInfo", "get_probe", "list_probes", "probe_names", "register_probe"],
    "bnprobe.probes._sparsity": ["SparsityProbe"],
    "bnprobe.probes._spec": ["build_probes", "parse_probe_spec", "split_probe_list"],
    "bnprobe.probes.metrics": ["Metric"],
    "bnprobe.probes.pool": ["ProbePool"],
    "bnprobe.probes.runner": ["ProbeFailedError", "ProbeFailureWarning", "ProbeOutcome", "run_probes", "start_probes"],
})
