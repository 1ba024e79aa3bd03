"""Report: the results files (:class:`Results`), the statistics across seeds, the terminal tables, the
files on disk (results.json, results.csv, plots/) and the comparison of two studies.
"""

from bnprobe.report._compare import comparison_json, render_comparison
from bnprobe.report._report import Metrics, probe_metrics, render, seed_values, summary_json, write_outputs
from bnprobe.report._results import Results, RunResult, finite_history
from bnprobe.report._stats import (
    CONFIDENCE,
    CORRELATION_METHOD,
    PAIRED_METHOD,
    STATS_CSV_COLUMNS,
    Difference,
    Summary,
    correlation,
    format_numbers,
    format_value,
    paired_difference,
    summarise,
)

__all__ = [
    "CONFIDENCE",
    "CORRELATION_METHOD",
    "PAIRED_METHOD",
    "STATS_CSV_COLUMNS",
    "comparison_json",
    "correlation",
    "finite_history",
    "format_numbers",
    "format_value",
    "paired_difference",
    "probe_metrics",
    "render",
    "render_comparison",
    "seed_values",
    "summarise",
    "summary_json",
    "write_outputs",
    "Difference",
    "Metrics",
    "Results",
    "RunResult",
    "Summary",
]
