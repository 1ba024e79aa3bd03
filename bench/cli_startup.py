"""How long the command line takes to answer when it has nothing heavy to do.

Each case is a fresh process, timed from start to exit: ``bnprobe --help``, every ``bnprobe CMD --help``
and ``bnprobe probes`` (the registry, built-ins and installed plugins, listed), against the baseline
``python -c "import torch"`` measured in the same run.  Each is run ``--repeats`` times (default 5)
and the median kept; the cases take turns with the baseline, so a slow moment of the machine is
not charged to one side only.  Prints every case's median, its ratio to the baseline, and whether
it imported torch or timm (from the process's own ``sys.modules``), then checks the goals:

* ``--help`` and every ``CMD --help`` under 0.1x of ``import torch``;
* ``probes`` under 1x.

    python bench/cli_startup.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HELP_GOAL = 0.1
PROBES_GOAL = 1.0
COMMANDS = ("compare", "probe", "probes", "report", "reproduce", "run", "surgery")

REPORT_HEAVY = ("import atexit, sys\n"
                "atexit.register(lambda: print('HEAVY', *[m for m in ('torch', 'timm') if m in sys.modules],"
                " file=sys.stderr))\n")


def cli_case(args: list[str]) -> list[str]:
    """The command line that runs ``bnprobe ARGS`` and reports on stderr whether torch/timm were imported."""
    code = REPORT_HEAVY + f"from bnprobe.cli import cli\ncli({args!r}, prog_name='bnprobe')\n"
    return [sys.executable, "-c", code]


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[-1:])[:60]} failed (exit {done.returncode}):\n{done.stderr}")
    heavy = next((line for line in done.stderr.splitlines() if line.startswith("HEAVY")), "HEAVY")
    return seconds, heavy.removeprefix("HEAVY").strip() or "neither"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    baseline = [sys.executable, "-c", "import torch"]
    cases = {"--help": cli_case(["--help"])}
    cases |= {f"{name} --help": cli_case([name, "--help"]) for name in COMMANDS}
    cases["probes"] = cli_case(["probes"])
    timed(baseline)  # untimed: the first start reads the files from disk
    times: dict[str, list[float]] = {name: [] for name in ["import torch", *cases]}
    imported: dict[str, str] = {}
    for _ in range(args.repeats):
        for name, command in cases.items():
            times["import torch"].append(timed(baseline)[0])
            seconds, imported[name] = timed(command)
            times[name].append(seconds)
    base = statistics.median(times["import torch"])
    print(f"{'case':<20} {'median s':>9} {'x import torch':>15}  imports")
    print(f"{'import torch':<20} {base:9.3f} {1.0:15.3f}")
    failed = []
    for name in cases:
        median = statistics.median(times[name])
        ratio = median / base
        goal = PROBES_GOAL if name == "probes" else HELP_GOAL
        mark = "ok" if ratio < goal else f"ABOVE the {goal}x goal"
        print(f"{name:<20} {median:9.3f} {ratio:15.3f}  {imported[name]:<10} {mark}")
        if ratio >= goal:
            failed.append(name)
    print(f"goals: --help and CMD --help < {HELP_GOAL}x, probes < {PROBES_GOAL}x of import torch: "
          + ("met" if not failed else f"missed by {', '.join(failed)}"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
