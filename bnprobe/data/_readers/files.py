"""Finding a dataset's files: the usual folders first, then torchvision's download, else one clear error.

A download that fails (or is interrupted) takes back what it made: the folders it created, and the
files it left in folders that were there before, so a second try does not find half a dataset.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from bnprobe._common import first_line
from bnprobe._hints import option, setting
from bnprobe.data._loaders import cache_root
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
    folder has the files, into ``data_root`` (default: :func:`bnprobe.data._loaders.cache_root`).
    """
    root = Path(data_root).expanduser() if data_root is not None else None
    files, partial = find_files(folders(root), wanted)
    if files is not None:
        return files
    if partial is not None:
        raise BnprobeError(f"{dataset}: {partial}; put all of {', '.join(n[0] for n in wanted)} there "
                           "(or remove them to download again)")
    target = root if root is not None else cache_root()
    before = _listing([target, *folders(target)])
    try:
        target.mkdir(parents=True, exist_ok=True)
        download(target)
    except BaseException as exc:
        _take_back(before)
        if not isinstance(exc, Exception):  # Ctrl-C: cleaned up, and still an interruption
            raise
        reason = first_line(exc, last=True)  # torchvision lists each mirror's error; the last says why
        searched = ", ".join(str(f) for f in folders(root))
        raise BnprobeError(f"{dataset}: its files are in none of {searched}, and downloading them to {target} "
                           f"failed ({reason}); put {', '.join(n[0] for n in wanted)} in a folder and pass "
                           f"{option('data_root', 'FOLDER')}") from None
    files, partial = find_files(folders(target), wanted)
    if files is None:
        raise BnprobeError(f"{dataset}: the download to {target} did not leave the expected files "
                           f"({partial or 'none found'}); pass {setting('data_root')} with a folder that has them")
    return files


def _missing_parents(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet (what ``mkdir(parents=True)`` creates)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _listing(folders: Sequence[Path]) -> dict[Path, set[str] | None]:
    """Each folder and the folders between it and an existing one -> its entries now, or None if it is not there."""
    listing: dict[Path, set[str] | None] = {}
    for folder in folders:
        for path in (folder, *_missing_parents(folder)):
            listing[path] = set(os.listdir(path)) if path.is_dir() else None
    return listing


def _take_back(before: dict[Path, set[str] | None]) -> None:
    """Remove what appeared since ``before``: the folders that were not there, new entries in those that were."""
    for folder, entries in sorted(before.items(), key=lambda item: len(item[0].parts)):
        if entries is None:
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.is_dir():
            for name in set(os.listdir(folder)) - entries:
                path = folder / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
