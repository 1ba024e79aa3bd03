"""Report: the results files (:class:`Results`), the statistics across seeds, the terminal tables, the
files on disk (results.json, results.csv, plots/) and the comparison of two studies.

* ``_results`` -- ``results.json`` and ``results.csv`` (:class:`Results`, :class:`RunResult`);
* ``_stats`` -- means, intervals and paired differences over seeds, and how numbers print;
* ``_inference`` -- differences read against a margin: t tests, Holm's correction, seeds for 80% power;
* ``_spread`` -- how much of the spread comes from seeds and how much from the probed samples;
* ``_numbers`` -- those statistics per probe, layer, metric and variant (:func:`metric_stats`);
* ``_terminal`` -- the tables and lines :func:`render` prints;
* ``_files`` -- :func:`write_outputs` (CSV, history, plots) and :func:`summary_json`;
* ``_plots`` and ``_compare`` -- the figures, and two studies side by side.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe.report._compare": ["Comparison", "compare", "comparison_json", "render_comparison"],
    "bnprobe.report._numbers": ["Metrics", "metric_stats", "probe_metrics", "seed_values"],
    "bnprobe.report._plots": ["ablation_curves", "heatmap", "heatmap_figure", "plot"],
    "bnprobe.report._terminal": ["render"],
    "bnprobe.report._files": ["summary_json", "write_outputs"],
    "bnprobe.report._inference": [
        "ALPHA", "HOLM", "MARGIN_TESTS", "Estimate", "correlation_seeds_for", "holm", "p_above", "p_below", "p_beyond",
        "p_inside", "seeds_for",
    ],
    "bnprobe.report._results": ["Results", "RunResult", "finite_history"],
    "bnprobe.report._spread": ["SpreadSources", "set_values", "spread_sources"],
    "bnprobe.report._stats": [
        "CONFIDENCE", "CORRELATION_METHOD", "PAIRED_METHOD", "STATS_CSV_COLUMNS", "Difference", "Summary",
        "correlation", "format_numbers", "format_value", "paired_difference", "summarise",
    ],
})
