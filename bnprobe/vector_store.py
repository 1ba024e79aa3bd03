"""Where capture puts one layer's per-sample vectors: a preallocated array, or a ``.npy`` file.

Rows arrive batch by batch, in order.  In memory they are copied into an array allocated once for
all samples.  On disk they are appended to a ``.npy`` file with plain ``write`` calls (its header
first, written for the expected shape), so the process holds one batch at a time: the written bytes go
to the operating system's page cache, which is not part of the process's resident memory and which
the kernel writes back and reclaims on its own.  (Writing through a memory map instead would count
every written page as resident until it is unmapped.)  The file is read back memory-mapped.  When
fewer rows arrive than expected (a DataLoader with ``drop_last=True``), only the rows written are
read back.

Blocks are converted to the storage dtype on their own device before they are copied to the host,
so ``float16`` halves what crosses the bus as well as what is stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

_TORCH_DTYPES = {np.dtype("float32"): torch.float32, np.dtype("float16"): torch.float16}


class VectorStore:
    """The ``(rows, dim)`` vectors of one layer, filled in order, in memory (``path=None``) or on disk."""

    def __init__(self, rows: int, dim: int, dtype: str | np.dtype, path: Path | None) -> None:
        self.rows, self.dim, self.dtype, self.path = rows, dim, np.dtype(dtype), path
        self._torch_dtype = _TORCH_DTYPES[self.dtype]
        self.filled = 0
        self.array: np.ndarray | None = None
        self._file = None
        self._offset = 0
        if path is None:
            self.array = np.empty((rows, dim), dtype=self.dtype)
        else:
            self._file = open(path, "wb")  # noqa: SIM115 - closed in finish()
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (rows, dim)}
            np.lib.format.write_array_header_1_0(self._file, header)
            self._offset = self._file.tell()

    def write(self, block: torch.Tensor) -> None:
        """Append the ``(batch, dim)`` rows of ``block`` (any device, any float dtype).

        The rows are copied before this returns, so the caller's tensor may change afterwards.
        """
        block = block.detach()[: self.rows - self.filled]
        if block.device.type != "cpu":
            block = block.to(self._torch_dtype)
        if self.array is not None:
            torch.from_numpy(self.array[self.filled:self.filled + len(block)]).copy_(block)
        else:
            host = block.to("cpu", self._torch_dtype).contiguous()
            self._file.write(host.numpy().data)
        self.filled += len(block)

    def finish(self) -> None:
        """Close the file (if any); safe to call more than once."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def load(self) -> np.ndarray:
        """The ``(filled, dim)`` stored vectors: the in-memory array, or the file memory-mapped read-only."""
        if self.array is not None:
            return self.array[: self.filled]
        if self.filled == 0:
            return np.empty((0, self.dim), dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self._offset, shape=(self.filled, self.dim))
