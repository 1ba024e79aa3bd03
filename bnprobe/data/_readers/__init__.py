"""Datasets read from their original files; importing this package registers them.

* :mod:`~bnprobe.data._readers.idx` -- ``mnist`` and ``fashion-mnist`` from the idx files;
* :mod:`~bnprobe.data._readers.cifar` -- ``cifar10`` from the python pickle batches;
* :mod:`~bnprobe.data._readers.folder` -- ``folder:PATH``, an image-folder tree.

Each loader looks for the files where they usually are, falls back to torchvision's download, and
otherwise raises a one-line :class:`bnprobe.errors.BnprobeError` naming the missing files and the
``--data-root`` option.
"""

from bnprobe.data._readers import cifar, folder, idx  # noqa: F401  (registers the loaders)
