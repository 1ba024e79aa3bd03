"""examples/notebook.ipynb runs from top to bottom in a fresh kernel, and shows what it says it shows."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"


def test_the_notebook_runs_and_shows_the_report_the_frame_and_the_figure(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   ).execute()
    outputs = [cell.get("outputs", []) for cell in notebook.cells if cell.cell_type == "code"]
    assert not [o for cell in outputs for o in cell if o.output_type == "error"]
    shown = [o.get("data", {}) for cell in outputs for o in cell if o.output_type == "execute_result"]
    html = [data["text/html"] for data in shown if "text/html" in data]
    assert any(text.startswith("<pre") and "channel_sparsity" in text for text in html)  # the report
    assert any("<table" in text and "identity" in text for text in html)  # the pivot of the frame
    assert any("image/png" in data for data in shown)  # the figure
    printed = "".join(o.get("text", "") for cell in outputs for o in cell if o.output_type == "stream")
    assert "as the study measured it" in printed
    assert (tmp_path / "notebook-study" / "results.json").is_file()
