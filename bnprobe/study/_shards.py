"""A study run in pieces -- a seed range (``--seeds 4-7``) or a shard (``--shard K/N``, the rules in
:mod:`bnprobe._seeds`), as an array job (SLURM's ``--array``) runs it -- joined into one study folder
by :func:`merge_studies`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bnprobe._common import write_atomic
from bnprobe._seeds import describe_seeds
from bnprobe.errors import BnprobeError
from bnprobe.report._results import Results


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
