"""What the Ray executor runs outside its tasks: the storage check's reader and the actor that
carries listener events to the driver.  Kept free of torch, so that the worker or actor process
that runs them starts in a fraction of a second (:mod:`bnprobe.study._ray`)."""

from __future__ import annotations

from pathlib import Path


def reads_token(path: str, token: str) -> bool:
    """Whether ``path`` holds ``token`` (run on each node by :func:`bnprobe.study._ray.check_storage`)."""
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


class EventBox:
    """The actor the tasks send listener events to, and the driver drains."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple]] = []

    def put(self, event: tuple[str, tuple]) -> None:
        self.events.append(event)

    def drain(self) -> list[tuple[str, tuple]]:
        events, self.events = self.events, []
        return events
