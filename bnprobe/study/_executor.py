"""Where a study's runs train: ``local`` (this process, one run after another) or on Ray
(``ray`` starts a local Ray instance, or joins the one this process is connected to; ``ray:ADDRESS``
joins a cluster, ``ray:auto`` the one ``ray start`` runs on this node).  Checked when the config is
made, long before anything connects (:func:`check_executor`)."""

from __future__ import annotations

from bnprobe.errors import BnprobeError

EXECUTORS = ("local", "ray", "ray:ADDRESS")


def parse_executor(executor: str) -> tuple[str, str | None]:
    """``("local", None)``, ``("ray", None)`` or ``("ray", ADDRESS)``."""
    kind, colon, address = str(executor).partition(":")
    if kind not in ("local", "ray") or (kind == "local" and colon) or (kind == "ray" and colon and not address):
        raise BnprobeError(f"executor {executor!r}: use local, ray (a local Ray instance) or ray:ADDRESS "
                           "(ray:auto for the cluster `ray start` runs)")
    return kind, address or None


def check_executor(executor: str, gpus_per_task: float | None, cpus_per_task: float, max_retries: int) -> None:
    """A one-line error for an executor or task resources that cannot work."""
    parse_executor(executor)
    if gpus_per_task is not None and not gpus_per_task >= 0:
        raise BnprobeError(f"gpus_per_task must be 0 or more (a fraction packs tasks on one GPU), got {gpus_per_task}")
    if not cpus_per_task > 0:
        raise BnprobeError(f"cpus_per_task must be more than 0, got {cpus_per_task}")
    if not (isinstance(max_retries, int) and max_retries >= 0):
        raise BnprobeError(f"max_retries must be a whole number, 0 or more, got {max_retries!r}")
