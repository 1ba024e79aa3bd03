"""Where capture puts one layer's per-sample vectors: a device tensor, a host array, or a ``.npy`` file.

Rows arrive batch by batch, in order, and go to one of three places, each allocated once for all
samples:

* on a CUDA device (``device=...``): a preallocated ``(rows, dim)`` tensor there.  A block from the
  same device is copied (and converted to the storage dtype) by the device itself, asynchronously:
  nothing crosses the bus and the host never waits.  The vectors take device memory instead of host
  memory, and probes that do their linear algebra on the device read them without a round trip;
* in host memory (``path=None``): a preallocated array;
* on disk (``path``): a ``.npy`` file appended with plain ``write`` calls (its header first, written
  for the expected shape), so the process holds one batch at a time: the written bytes go to the
  operating system's page cache, which is not part of the process's resident memory and which the
  kernel writes back and reclaims on its own.  (Writing through a memory map instead would count
  every written page as resident until it is unmapped.)  The file is read back memory-mapped.

When fewer rows arrive than expected (a DataLoader with ``drop_last=True``), only the rows written
are read back.  Blocks headed for the host are converted to the storage dtype on their own device
before they are copied, so ``float16`` halves what crosses the bus as well as what is stored.

:meth:`VectorStore.load` gives the rows as a numpy array in the storage dtype (a device store copies
them to the host); :meth:`VectorStore.load_tensor` gives them as a float32 tensor on a chosen device.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from bnprobe._common import naming

_TORCH_DTYPES = {np.dtype("float32"): torch.float32, np.dtype("float16"): torch.float16}


class VectorStore:
    """The ``(rows, dim)`` vectors of one layer, filled in order: on ``device``, in memory, or at ``path``.

    Give at most one of ``path`` (a ``.npy`` file) and ``device`` (a torch device, in practice CUDA);
    with neither the rows go to a host array.
    """

    def __init__(self, rows: int, dim: int, dtype: str | np.dtype, path: Path | None = None,
                 device: torch.device | str | None = None) -> None:
        if path is not None and device is not None:
            raise ValueError("a VectorStore lives on a device or in a file, not both")
        self.rows, self.dim, self.dtype, self.path = rows, dim, np.dtype(dtype), path
        self._torch_dtype = _TORCH_DTYPES[self.dtype]
        self.filled = 0
        self.array: np.ndarray | None = None
        self.tensor: torch.Tensor | None = None
        self._file = None
        self._offset = 0
        if device is not None:
            self.tensor = torch.empty((rows, dim), dtype=self._torch_dtype, device=device)
        elif path is None:
            self.array = np.empty((rows, dim), dtype=self.dtype)
        else:
            with naming(path):  # a full disk's error names the cache file
                self._file = open(path, "wb")  # noqa: SIM115 - closed in finish()
                header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                          "shape": (rows, dim)}
                np.lib.format.write_array_header_1_0(self._file, header)
            self._offset = self._file.tell()

    @property
    def device(self) -> torch.device:
        """Where the rows live: the store's device, or the CPU for host and disk stores."""
        return self.tensor.device if self.tensor is not None else torch.device("cpu")

    @property
    def nbytes(self) -> int:
        """Bytes the stored rows take."""
        return self.filled * self.dim * self.dtype.itemsize

    def write(self, block: torch.Tensor) -> None:
        """Append the ``(batch, dim)`` rows of ``block`` (any device, any float dtype).

        The rows are copied before the block can change: on the host before this returns; into a
        device store by a copy queued on the current stream, ahead of any later operation there.
        """
        block = block.detach()[: self.rows - self.filled]
        if self.tensor is not None:
            self.tensor[self.filled:self.filled + len(block)].copy_(block)
            self.filled += len(block)
            return
        if block.device.type != "cpu":
            block = block.to(self._torch_dtype)
        if self.array is not None:
            torch.from_numpy(self.array[self.filled:self.filled + len(block)]).copy_(block)
        else:
            host = block.to("cpu", self._torch_dtype).contiguous()
            with naming(self.path):
                self._file.write(host.numpy().data)
        self.filled += len(block)

    def finish(self) -> None:
        """Close the file (if any); safe to call more than once."""
        if self._file is not None:
            file, self._file = self._file, None
            with naming(self.path):  # closing writes what is still buffered
                file.close()

    def load(self) -> np.ndarray:
        """The ``(filled, dim)`` stored vectors in the storage dtype, on the host.

        The in-memory array, the file memory-mapped read-only, or a host copy of a device store.
        """
        if self.tensor is not None:
            return self.tensor[: self.filled].cpu().numpy()
        if self.array is not None:
            return self.array[: self.filled]
        if self.filled == 0:
            return np.empty((0, self.dim), dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self._offset, shape=(self.filled, self.dim))

    def load_tensor(self, device: torch.device | str) -> torch.Tensor:
        """The ``(filled, dim)`` stored vectors as a float32 tensor on ``device``.

        A device store on that device converts there, with no host round trip; host and disk stores
        go through :func:`torch.from_numpy`, crossing the bus in the storage dtype and converting on
        arrival.  When no conversion or move is needed the tensor shares memory with the store (like
        :meth:`load`), so treat it as read-only; a memory-mapped file is always copied.
        """
        device = torch.device(device)
        if self.tensor is not None:
            return self.tensor[: self.filled].to(device).float()
        stored = self.load()
        if device.type == "cpu":
            if not stored.flags.writeable or stored.dtype != np.float32:
                stored = np.array(stored, dtype=np.float32)  # never hand out a read-only memory map
            return torch.from_numpy(stored)
        with warnings.catch_warnings():  # from_numpy warns on read-only arrays; this one is only read
            warnings.simplefilter("ignore", UserWarning)
            host = torch.from_numpy(stored)
        return host.to(device).float()
