"""Part of a study's seeds: a range (``--seeds 4-7``) and a shard (``--shard K/N``: every N-th seed
from the K-th), so that an array job (SLURM's ``--array``) runs a study in pieces; and
:func:`merge_studies`, which joins the pieces into one study folder."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from bnprobe._common import write_atomic
from bnprobe.errors import BnprobeError
from bnprobe.report._results import Results

SEED_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_seeds(seeds: int | str, first_seed: int = 0) -> tuple[int, int]:
    """``(first_seed, count)`` of ``seeds``: a count (``4``, seeds ``first_seed`` on) or a range ``"4-7"``."""
    if isinstance(seeds, str):
        match = SEED_RANGE.match(seeds)
        if match and first_seed:
            raise BnprobeError(f"seeds {seeds!r} is a range and first_seed is {first_seed}; give one of them")
        if match:
            first, last = int(match[1]), int(match[2])
            if last < first:
                raise BnprobeError(f"seeds {seeds!r}: the range ends before it starts; write FIRST-LAST, e.g. 4-7")
            return first, last - first + 1
        if not seeds.strip().isdigit():
            raise BnprobeError(f"seeds {seeds!r}: give a count (4: seeds 0-3) or a range (4-7)")
        seeds = int(seeds)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise BnprobeError(f"seeds must be at least 1, got {seeds!r}")
    if not isinstance(first_seed, int) or first_seed < 0:
        raise BnprobeError(f"first_seed must be 0 or more, got {first_seed!r}")
    return first_seed, seeds


def parse_shard(shard: str) -> tuple[int, int]:
    """``(K, N)`` of ``"K/N"``, 1 <= K <= N."""
    match = SHARD.match(str(shard))
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise BnprobeError(f"shard {shard!r}: write K/N with 1 <= K <= N, e.g. 2/4 (the second of four parts)")
    return int(match[1]), int(match[2])


def shard_seeds(seeds: list[int], shard: str) -> list[int]:
    """The seeds of shard ``K/N``: every N-th of ``seeds`` from the K-th (each seed's runs stay together,
    so the ``bn`` reference of a seed is in the same shard)."""
    k, n = parse_shard(shard)
    part = seeds[k - 1::n]
    if not part:
        raise BnprobeError(f"shard {shard} has no seeds: the study has {len(seeds)} ({describe_seeds(seeds)}); "
                           f"use at most {len(seeds)} shards")
    return part


def describe_seeds(seeds: list[int]) -> str:
    """``0-3`` for consecutive seeds, else ``0, 2, 4``."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def merge_studies(out: str | Path, shards: Sequence[str | Path], *, overwrite: bool = False) -> Results:
    """Join the studies in ``shards`` (parts of one study: ``--shard K/N`` or ``--seeds A-B``) into ``out``.

    Their configs must agree but for which seeds they ran, every run of the whole study must be in
    exactly one of them, and their layers must be the same; otherwise a one-line error says which
    shard or run is wrong.  ``out`` gets the merged ``results.json``, the CSVs and plots, and each
    run's checkpoint, as if one study had run there.
    """
    from bnprobe.report import write_outputs
    from bnprobe.study._config import MAY_CHANGE_ON_RESUME, StudyConfig
    from bnprobe.study._dir import check_out_dir, remove_study
    from bnprobe.study._run import study_order
    from bnprobe.train._state import checkpoint_path, first_difference

    if not shards:
        raise BnprobeError("merge needs the folders of the shards to join: bnprobe merge OUT DIR DIR ...")
    out_dir = Path(out)
    if any(Path(shard).resolve() == out_dir.resolve() for shard in shards):
        raise BnprobeError(f"merge writes into {out_dir}, which is one of the shards; merge into a new folder")
    check_out_dir(out_dir, resume=False, overwrite=overwrite, can_resume=False)
    loaded = [(Path(shard), _load_shard(Path(shard))) for shard in shards]
    first_dir, first = loaded[0]
    ignored = (*MAY_CHANGE_ON_RESUME, "shard", "seeds", "first_seed", "weights")  # weights: each run's own
    whole = StudyConfig.from_dict({**first.config, "shard": None})
    seeds: set[int] = set()
    owner: dict[tuple[str, int], Path] = {}
    for folder, results in loaded:
        difference = first_difference(first.config, results.config, ignore=ignored)
        if difference is not None:
            raise BnprobeError(f"{folder} is not a shard of the study in {first_dir}: its config differs "
                               f"({difference.replace(' there and ', f' in {first_dir} and ').replace(' now', '')})")
        if results.layers and first.layers and results.layers != first.layers:  # none: no run was captured
            raise BnprobeError(f"{folder} probed other layers than {first_dir}; merge shards of one study")
        config = StudyConfig.from_dict(results.config)
        seeds |= set(config.seed_range)
        for run in results.runs:
            key = (run.variant, run.seed)
            if key in owner:
                raise BnprobeError(f"{run.variant} seed {run.seed} is in both {owner[key]} and {folder}; "
                                   "merge each run once (shards of one study do not overlap)")
            owner[key] = folder
    whole.first_seed, whole.seeds = min(seeds), max(seeds) - min(seeds) + 1
    order = study_order(whole)
    missing = [key for key in order if key not in owner]
    if missing:
        named = ", ".join(f"{variant} seed {seed}" for variant, seed in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise BnprobeError(f"no shard holds {named}{more} (seeds {describe_seeds(whole.seed_range)}); run the "
                           "shards that hold them (or finish an interrupted one), then merge again")
    runs = {(run.variant, run.seed): run for _, results in loaded for run in results.runs}
    weights = {key: path for _, results in loaded for key, path in results.config.get("weights", {}).items()}
    merged = Results(model=first.model, dataset=first.dataset,
                     config={**first.config, **whole.to_dict(), "weights": weights}, runs=[runs[key] for key in order],
                     layers=next((list(results.layers) for _, results in loaded if results.layers), []))
    if overwrite:
        remove_study(out_dir)  # only now: a refused merge leaves the study in OUT as it was
    for (variant, seed), folder in owner.items():
        checkpoint = checkpoint_path(folder, variant, seed)
        if checkpoint.is_file():
            write_atomic(checkpoint_path(out_dir, variant, seed), checkpoint.read_bytes())
    merged.save(out_dir)
    write_outputs(merged, out_dir)
    return merged


def _load_shard(folder: Path) -> Results:
    if not (folder / "results.json").is_file():
        raise BnprobeError(f"{folder} holds no study (no results.json); give the output folders of the shards")
    return Results.load(folder)
