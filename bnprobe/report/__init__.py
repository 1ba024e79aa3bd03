"""Report: the results files (:class:`Results`), the statistics across seeds, the terminal tables, the
files on disk (results.json, results.csv, plots/) and the comparison of two studies.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe.report._compare": ["comparison_json", "render_comparison"],
    "bnprobe.report._report": ["Metrics", "probe_metrics", "render", "seed_values", "summary_json", "write_outputs"],
    "bnprobe.report._results": ["Results", "RunResult", "finite_history"],
    "bnprobe.report._stats": [
        "CONFIDENCE", "CORRELATION_METHOD", "PAIRED_METHOD", "STATS_CSV_COLUMNS", "Difference", "Summary",
        "correlation", "format_numbers", "format_value", "paired_difference", "summarise",
    ],
})
