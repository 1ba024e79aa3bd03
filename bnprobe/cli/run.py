"""``bnprobe run MODEL``: a whole study from the command line."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from bnprobe._common import CHECKPOINT_MODES, DEFAULT_VARIANTS, INIT_VARIANT, REFERENCE_VARIANT, safe_filename
from bnprobe.cli import cli
from bnprobe.cli._interrupt import resumable
from bnprobe.cli._scale import executor_options, scale_settings, shard_option
from bnprobe.errors import BnprobeError
from bnprobe.params import split_list

if TYPE_CHECKING:
    from bnprobe.study import StudyConfig, StudyListener

PER_VARIANT_HELP = "A number for every variant, or per variant: '1e-3,bn=3e-3' (bn 3e-3, the others 1e-3)."
RECALIBRATE_HELP = ("Recompute the BatchNorm running statistics over the training data after training, before "
                    "evaluating and probing (precise BN; docs/training.md).")
CHECKPOINTS_HELP = ("What a finished run's checkpoint keeps: final (its weights: enough for bnprobe probe and "
                    "--init-weights), resume (its whole training state), none (removed once the study is done).")


def default_out(model: str) -> Path:
    """``runs/<model>-<timestamp>``, with characters unsafe in paths replaced."""
    safe = safe_filename(model, fill="-")
    return Path("runs") / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def per_variant(option: str, text: str, default: float | None) -> tuple[float | None, dict[str, float | None]]:
    """Parse ``0.01`` or ``0.01,bn=0.1,identity=none`` into (value for all, {variant: own value}).

    A bare value sets every variant (``default`` when there is none); ``VARIANT=VALUE`` one of them;
    ``none`` turns an optional setting (clipping) off.
    """
    shared, own = default, {}
    for item in (part.strip() for part in text.split(",")):
        variant, _, value = item.rpartition("=")
        if variant:
            own[variant.strip()] = _number(option, value)
        elif item:
            shared = _number(option, item)
    return shared, own


def _number(option: str, text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise BnprobeError(f"{option}: {text.strip()!r} is not a number; give e.g. 1e-3 or bn=3e-3,identity=5e-4") \
            from None


def train_settings(variants: list[str], options: dict[str, str]) -> tuple[dict, dict[str, dict]]:
    """TrainConfig values and per-variant overrides from the per-variant options (``--lr`` ...).

    ``--agc`` is the exception: a bare value applies to every variant but ``bn`` -- AGC stands in for
    what BatchNorm does for stability, and the ``bn`` reference is trained as built (``bn=VALUE``
    clips it too).
    """
    from bnprobe.train._loop import TrainConfig

    defaults = TrainConfig()
    shared: dict = {}
    overrides: dict[str, dict] = {}
    for name, text in options.items():
        value, own = per_variant(f"--{name.replace('_', '-')}", text, getattr(defaults, name))
        if name == "agc" and value is not None:
            own = {**{v: value for v in variants if v != REFERENCE_VARIANT}, **own}
            value = None
        shared[name] = value
        for variant, setting in own.items():
            overrides.setdefault(variant, {})[name] = setting
    return shared, overrides


def _read_config(ctx: click.Context, _param: click.Parameter, path: str | None) -> None:
    """Eager callback: the study file's settings become the defaults of every other option."""
    from bnprobe.study._file import read_study_file

    if path:
        names = {setting: p.name for p in ctx.command.params if p.name and p.name != "config"
                 for setting in _setting_names(p)}
        ctx.default_map = {**(ctx.default_map or {}), **read_study_file(path, names)}


def _setting_names(param: click.Parameter) -> list[str]:
    """A study file's names for ``param``: its long options' (``json`` for ``--json``; ``init_weights`` and
    the old ``checkpoint``), or the argument's; the mode flags share one, ``mode = "fine-tune"``."""
    if isinstance(param, click.Option) and param.is_flag and not param.is_bool_flag:
        return [str(param.name)]
    long = [opt for opt in param.opts if opt.startswith("--")] if isinstance(param, click.Option) else []
    return [opt[2:].replace("-", "_") for opt in long] if long else [str(param.name)]


class PretrainedWeights(click.ParamType):
    """``--pretrained`` alone (or ``pretrained = true`` in a study file): True, the published weights
    from the local cache; ``--pretrained FILE``: the path."""

    name = "file"

    def convert(self, value, param, ctx) -> bool | str:
        return True if value is True or value == PRETRAINED_CACHE else str(value)


PRETRAINED_CACHE = "cache"
"""What ``--pretrained`` alone stands for: the model's published weights, looked up in the local caches."""
PRETRAINED_HELP = ("Start from the model's published weights (timm, tv: or hf-hub: names), read from the local "
                   "cache, or from FILE; never downloaded.  Implies --fine-tune unless --probe-only.")


def mode_options(command):
    """The study mode flags, one shared ``mode`` setting (:data:`bnprobe._common.STUDY_MODES`)."""
    for flag, mode, text in reversed((
            ("--scratch", "scratch", "Train every run from a fresh initialisation [default without starting weights]."),
            ("--fine-tune", "fine-tune", "Make the variants from the starting weights, then train them "
                                         "[default with --pretrained or --init-weights]."),
            ("--probe-only", "probe-only", "Train nothing: evaluate and probe the variants of the starting "
                                           "weights as they are (bn against fold and frozen, or a swap as is)."))):
        command = click.option(flag, "mode", flag_value=mode, default=None, help=text)(command)
    return command


@cli.command()
@click.argument("model", required=False)
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_read_config, help="A TOML or YAML study file; options given here override it.")
@click.option("--dataset", default="digits", show_default=True,
              help="digits (embedded), mnist, fashion-mnist, cifar10, or folder:PATH (PATH/train, PATH/test).")
@click.option("--data-root", default=None,
              help="Folder with the dataset's files (downloaded there when missing) [default: usual places].")
@click.option("--variants", default=",".join(DEFAULT_VARIANTS), show_default=True,
              help=f"Comma list: {REFERENCE_VARIANT} (as built), norm targets, and {INIT_VARIANT} "
                   f"({REFERENCE_VARIANT} as initialised, not trained: where each probe stands before training).")
@click.option("--epochs", default=5, show_default=True, type=int)
@click.option("--seeds", default="1", show_default=True,
              help="How many seeds (3: seeds 0, 1, 2), or a range of them (4-7).")
@click.option("--samples", default=5000, show_default=True, type=int,
              help="Training samples to probe (capped at the split's size).")
@click.option("--sample-sets", default=1, show_default=True, type=int,
              help="Disjoint sets of --samples probed per run, each seed its own; 2 or more bring the choice "
                   "of samples into the intervals and split the spread into seeds and samples.")
@click.option("--probes", default="sparsity,hdbscan", show_default=True,
              help="Comma list of probes, with parameters: 'hdbscan(dims=30)'.")
@click.option("--layers", default="act", show_default=True, help="Layer kinds (act, conv, norm) or globs.")
@click.option("--spatial", default="flatten", show_default=True,
              help="Per-sample vectors: flatten, channel_mean or pool:K.")
@click.option("--batch-size", default=128, show_default=True, type=int, help="Global batch (over all GPUs).")
@click.option("--optimizer", default="adamw", show_default=True, help="sgd (Nesterov momentum), adam or adamw.")
@click.option("--lr", default="1e-3", show_default=True, help=f"Peak learning rate. {PER_VARIANT_HELP}")
@click.option("--momentum", default="0.9", show_default=True, help="SGD momentum (per variant too).")
@click.option("--weight-decay", default="5e-4", show_default=True,
              help="Weight decay on weights, not biases or norm parameters (per variant too).")
@click.option("--schedule", default="cosine", show_default=True, help="cosine, onecycle or constant (per step).")
@click.option("--label-smoothing", default="0", show_default=True, help="Label smoothing (per variant too).")
@click.option("--grad-clip", default="none", show_default=True, help="Max global gradient norm (per variant too).")
@click.option("--agc", default="none", show_default=True,
              help="Adaptive gradient clipping factor, e.g. 0.01; a bare value applies to every variant but bn.")
@click.option("--precision", default="auto", show_default=True,
              help="auto (bf16 on a GPU that has it, else fp32), fp32, bf16 or fp16.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (worth it for long GPU runs).")
@click.option("--sync-bn", is_flag=True, help="Under torchrun: BatchNorm statistics over the global batch.")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="The dataset's augmentation: random crop, plus flips where they keep the class.")
@click.option("--recalibrate-bn/--no-recalibrate-bn", default=False, show_default=True, help=RECALIBRATE_HELP)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--fuse/--no-fuse", default=None,
              help="Train each variant's seeds as one batched (vmapped) model, same numbers up to rounding "
                   "[default: on CUDA only].")
@click.option("--cuda-graph/--no-cuda-graph", default=True, show_default=True,
              help="Replay each fused training step from a CUDA graph (CUDA only; same numbers, less overhead).")
@click.option("--probe-workers", default="auto", show_default=True,
              help="Processes that run HDBSCAN (and other split probes) in parallel: a number, or auto "
                   "(one per core but one, from 4 cores); 0 probes in this process only.")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: runs/<model>-<timestamp>].")
@click.option("--resume", is_flag=True, help="Continue the study in --out: keep finished runs, resume the last.")
@click.option("--overwrite/--no-overwrite", default=False,
              help="Replace the study in --out: remove its results, plots, checkpoints and caches first "
                   "(other files stay).")
@click.option("--checkpoints", "keep", type=click.Choice(CHECKPOINT_MODES), default="final", show_default=True,
              help=CHECKPOINTS_HELP)
@click.option("--init-weights", "--checkpoint", "init_weights", default=None, type=click.Path(dir_okay=False),
              help="Weights (state_dict or timm checkpoint) loaded into the bn model before variants are made "
                   "(--checkpoint: its old name, deprecated).")
@click.option("--pretrained", is_flag=False, flag_value=PRETRAINED_CACHE, default=None, type=PretrainedWeights(),
              help=PRETRAINED_HELP)
@mode_options
@click.option("--max-memory", default="2GiB", show_default=True,
              help="Per-sample vectors above this size go to a memory-mapped cache in --out (e.g. 500MB, 4GiB).")
@click.option("--max-device-memory", default="auto", show_default=True,
              help="On a GPU, per-sample vectors up to this size stay in its memory (auto: half the free memory; "
                   "0: never).")
@click.option("--log", default=None,
              help="Also log each run's training curve and probe numbers to a tracker: tensorboard:DIR "
                   "(docs/workflows.md).")
@shard_option
@executor_options
@click.option("--quiet", is_flag=True, help="No progress, only the final report.")
@click.option("--verbose", is_flag=True,
              help="Also print internal notes: how training was planned (fused or not, and why).")
@click.option("--json", "as_json", is_flag=True,
              help="Print a machine-readable summary (docs/results.md) on stdout instead of the tables.")
def run(model: str | None, dataset: str, data_root: str | None, variants: str, epochs: int, seeds: str,
        samples: int, sample_sets: int, probes: str, layers: str, spatial: str, batch_size: int, optimizer: str,
        lr: str, momentum: str, weight_decay: str, schedule: str, label_smoothing: str, grad_clip: str, agc: str,
        precision: str, compile_: bool, sync_bn: bool, augment: bool, recalibrate_bn: bool, device: str,
        fuse: bool | None,
        cuda_graph: bool, probe_workers: str, out: str | None, resume: bool, overwrite: bool, keep: str,
        init_weights: str | None, pretrained: bool | str | None, mode: str | None, max_memory: str,
        max_device_memory: str, log: str | None, quiet: bool, verbose: bool, as_json: bool, **scale: Any) -> None:
    """Train MODEL with and without BatchNorm and compare its hidden representations.

    MODEL is a timm model name (resnet18, or hf-hub:timm/...), a torchvision one with a tv: prefix
    (tv:resnet18), or a bnprobe built-in (cnn4, vgg16_cifar).  Runs train from scratch, or from
    starting weights (--pretrained, --init-weights) with --fine-tune or not at all with --probe-only.
    Under torchrun every process trains and rank 0 reports.
    """
    from bnprobe.probes import split_probe_list
    from bnprobe.study import StudyConfig
    from bnprobe.train._loop import TrainConfig

    if model is None:
        raise BnprobeError("no MODEL given; name one (bnprobe run resnet18) or set model in the --config file")
    if resume and out is None:
        raise BnprobeError("--resume needs --out: the folder of the study to continue")
    variant_list = split_list(variants)
    shared, overrides = train_settings(variant_list, {
        "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "label_smoothing": label_smoothing,
        "grad_clip": grad_clip, "agc": agc})
    config = StudyConfig(
        model=model, dataset=dataset, data_root=data_root, variants=variant_list, seeds=seeds, samples=samples,
        sample_sets=sample_sets, probes=split_probe_list(probes), device=device, layers=layers, spatial=spatial,
        augment=augment,
        overrides=overrides, init_weights=init_weights, max_memory=parse_bytes("--max-memory", max_memory), fuse=fuse,
        cuda_graph=cuda_graph, probe_workers=parse_workers(probe_workers), checkpoints=keep,
        recalibrate_bn=recalibrate_bn, pretrained=pretrained or False, mode=mode,
        max_device_memory=parse_device_budget(max_device_memory), **scale_settings(scale),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, schedule=schedule,
                          precision=precision, compile=compile_, sync_bn=sync_bn, **shared))
    run_and_report(config, Path(out) if out else default_out(model), resume=resume, overwrite=overwrite, log=log,
                   quiet=quiet, verbose=verbose, as_json=as_json)


def run_and_report(config: StudyConfig, out_dir: Path, *, resume: bool, overwrite: bool, log: str | None,
                   quiet: bool, verbose: bool, as_json: bool) -> None:
    """Run the study with progress (and the ``--log`` tracker), then print its report or ``--json`` summary:
    what ``bnprobe run`` and ``bnprobe probe --weights`` share."""
    from bnprobe.cli._progress import RichListener
    from bnprobe.report import render, summary_json
    from bnprobe.study import Listeners, run_study
    from bnprobe.train._distributed import launched_world

    main_process = launched_world().is_main
    console = Console(stderr=as_json)
    logger = tracker(log) if main_process else None
    with resumable(out_dir), RichListener(quiet=quiet or not main_process, verbose=verbose) as listener:
        heard = listener if logger is None else Listeners(listener, logger)
        results = run_study(config, out=out_dir, listener=heard, resume=resume, overwrite=overwrite)
    if main_process:
        if as_json:
            click.echo(json.dumps(summary_json(results), indent=2, allow_nan=False))
        else:
            render(results, console)
        console.print(f"results: {out_dir / 'results.json'}, results.csv, history.csv, plots/", highlight=False)


def tracker(text: str | None) -> StudyListener | None:
    """``--log``: ``tensorboard:DIR`` -> the listener that writes there; None for no tracker."""
    if text is None:
        return None
    kind, sep, where = text.partition(":")
    if kind.strip().lower() != "tensorboard" or not sep or not where.strip():
        raise BnprobeError(f"--log {text!r}: give tensorboard:DIR, e.g. --log tensorboard:runs/tensorboard")
    from bnprobe.study import TensorBoardListener

    return TensorBoardListener(where.strip())


def parse_workers(text: str) -> int | None:
    """``--probe-workers``: ``auto`` -> None, else a count of at least 0."""
    if text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit():
        raise BnprobeError(f"--probe-workers: cannot read {text!r}; give a number of processes (0 or more) or auto")
    return int(text)


def parse_device_budget(text: str) -> int | str | None:
    """``--max-device-memory``: ``auto``, a size such as ``8GiB``, ``0`` or ``none``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return parse_bytes("--max-device-memory", text)
    except BnprobeError:
        raise BnprobeError(f"--max-device-memory: cannot read {text!r}; write auto, a size such as 8GiB, "
                           "0 (never on the GPU) or none (no limit)") from None


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(option: str, text: str) -> int | None:
    """``"2GiB"`` -> 2147483648; ``none`` -> None (no limit)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if text.strip().lower() == "none":
        return None
    if not match or match.group(2).lower() not in _UNITS:
        raise BnprobeError(f"{option}: cannot read {text!r} as a size; write e.g. 500MB, 2GiB or none")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
