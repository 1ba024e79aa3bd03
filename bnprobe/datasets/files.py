"""Finding a dataset's files: the usual folders first, then torchvision's download, else one clear error."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from bnprobe.data import cache_root
from bnprobe.errors import BnprobeError

FileSet = dict[str, Path]
"""Each wanted file's first name (``train-images-idx3-ubyte``) -> where it was found."""


def find_files(folders: Sequence[Path], wanted: Sequence[Sequence[str]]) -> tuple[FileSet | None, str | None]:
    """The first folder holding every wanted file, each under any of its names.

    ``wanted`` lists, per file, the names it may have (``("t10k-labels-idx1-ubyte",
    "t10k-labels-idx1-ubyte.gz")``).  Returns ``(files, None)``, or ``(None, note)`` where ``note``
    describes the first folder that held only some of them (or is None when none held any).
    """
    partial = None
    for folder in folders:
        found = {names[0]: next((folder / n for n in names if (folder / n).is_file()), None) for names in wanted}
        present = [name for name, path in found.items() if path is not None]
        if len(present) == len(wanted):
            return {name: path for name, path in found.items() if path is not None}, None
        if present and partial is None:
            missing = [name for name, path in found.items() if path is None]
            partial = f"{folder} has {present[0]} but not {', '.join(missing)}"
    return None, partial


def locate(dataset: str, wanted: Sequence[Sequence[str]], folders: Callable[[Path | None], list[Path]],
           data_root: str | Path | None, download: Callable[[Path], object]) -> FileSet:
    """Where ``dataset``'s files are: found in ``folders(root)``, or after ``download(root)``.

    ``download`` is a torchvision dataset constructor with ``download=True``; it runs only when no
    folder has the files, into ``data_root`` (default: :func:`bnprobe.data.cache_root`).
    """
    root = Path(data_root).expanduser() if data_root is not None else None
    files, partial = find_files(folders(root), wanted)
    if files is not None:
        return files
    if partial is not None:
        raise BnprobeError(f"{dataset}: {partial}; put all of {', '.join(n[0] for n in wanted)} there "
                           "(or remove them to download again)")
    target = root if root is not None else cache_root()
    try:
        target.mkdir(parents=True, exist_ok=True)
        download(target)
    except Exception as exc:  # any failure to fetch (no network, disk full) ends in the same advice
        lines = str(exc).strip().splitlines()  # torchvision lists each mirror's error; the last says why
        reason = lines[-1].strip() if lines else type(exc).__name__
        searched = ", ".join(str(f) for f in folders(root))
        raise BnprobeError(f"{dataset}: its files are in none of {searched}, and downloading them to {target} "
                           f"failed ({reason}); put {', '.join(n[0] for n in wanted)} in a folder and pass "
                           "--data-root FOLDER") from None
    files, partial = find_files(folders(target), wanted)
    if files is None:
        raise BnprobeError(f"{dataset}: the download to {target} did not leave the expected files "
                           f"({partial or 'none found'}); pass --data-root with a folder that has them")
    return files
