"""Time `bnprobe run resnet18` with every default (the README's first command).

Goal (issue 2): within 3 minutes on the 2-core CPU machine.  Prints the wall time, the ratio to the
180 s budget, and PASS/FAIL.  Extra arguments are passed on to `bnprobe run` (e.g. `--device cuda`).

    python bench/run_default.py [MODEL] [-- extra bnprobe run options]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 180.0


def main(argv: list[str]) -> int:
    model = argv[0] if argv and not argv[0].startswith("-") else "resnet18"
    extra = [a for a in argv[1:] if a != "--"] if argv and not argv[0].startswith("-") else argv
    exe = shutil.which("bnprobe") or str(Path(sys.executable).parent / "bnprobe")
    out = Path(tempfile.mkdtemp(prefix="bnprobe-bench-")) / "run"
    command = [exe, "run", model, "--out", str(out), *extra]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(command)
    seconds = time.perf_counter() - started
    shutil.rmtree(out.parent, ignore_errors=True)
    if proc.returncode != 0:
        print(f"bnprobe run failed with exit code {proc.returncode}")
        return proc.returncode
    verdict = "PASS" if seconds <= BUDGET_S else "FAIL"
    print(f"\nwall time {seconds:.1f} s; {seconds / BUDGET_S:.2f}x the {BUDGET_S:.0f} s budget: {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
