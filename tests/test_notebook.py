"""examples/notebook.ipynb runs from top to bottom in a fresh kernel, again in the same folder, and shows
what it says it shows, each value once; so does any cell that shows a bnprobe object."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"


def _executed(notebook: nbformat.NotebookNode, folder: Path) -> list[list[dict]]:
    """Run ``notebook`` in a fresh kernel in ``folder``; each code cell's outputs."""
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}},
                   ).execute()
    return [cell.get("outputs", []) for cell in notebook.cells if cell.cell_type == "code"]


def _shows_a_value(source: str) -> bool:
    """Whether a cell ends in an expression (a bare name or a call), whose value the notebook shows."""
    last = source.strip().splitlines()[-1]
    return not last.startswith((" ", "#", "print(", "assert ", "%")) and "=" not in last.split("(")[0]


def test_the_notebook_runs_twice_in_one_folder_and_shows_the_report_the_frame_and_the_figure_once(tmp_path):
    for _ in range(2):  # the second run finds the first one's study in notebook-study
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        outputs = _executed(notebook, tmp_path)
        assert not [o for cell in outputs for o in cell if o.output_type == "error"]
    sources = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    for source, cell in zip(sources, outputs, strict=True):
        shown = [o for o in cell if o.output_type != "stream"]
        assert len(shown) == _shows_a_value(source), (source, [o.output_type for o in cell])
    shown = [o.get("data", {}) for cell in outputs for o in cell if o.output_type == "execute_result"]
    html = [data["text/html"] for data in shown if "text/html" in data]
    assert any(text.startswith("<pre") and "channel_sparsity" in text for text in html)  # the report
    assert any("<table" in text and "identity" in text for text in html)  # the pivot of the frame
    assert any("image/png" in data for data in shown)  # the figure
    printed = "".join(o.get("text", "") for cell in outputs for o in cell if o.output_type == "stream")
    assert "as the study measured it" in printed
    assert (tmp_path / "notebook-study" / "results.json").is_file()


BUILD = '''
import bnprobe
from bnprobe.report import Results, RunResult

runs = [RunResult(variant=variant, seed=seed, train_accuracy=0.9, test_accuracy=0.8 - shift + 0.01 * seed,
                  final_loss=0.3, epochs_run=2,
                  probes={"sparsity": {f"features.{k}": {"channel_sparsity": 0.1 * k + shift + 0.01 * seed}
                                       for k in (1, 2, 3)}})
        for variant, shift in (("bn", 0.0), ("identity", 0.1)) for seed in (0, 1)]
results = Results(model="cnn4", dataset="digits", config={"probes": ["sparsity"]}, runs=runs,
                  layers=["features.1", "features.2", "features.3"])
'''


def test_a_cell_that_shows_a_bnprobe_object_gives_exactly_one_output(tmp_path):
    shown = ["results", "bnprobe.compare(results, results)", "bnprobe.plot(results, 'sparsity')"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in [BUILD, *shown]])
    built, *outputs = _executed(notebook, tmp_path)
    assert built == []
    for code, cell in zip(shown, outputs, strict=True):
        assert [o.output_type for o in cell] == ["execute_result"], code  # rich's console displays nothing itself
    assert all(cell[0]["data"]["text/html"].startswith("<pre") for cell in outputs[:2])
