"""Reused NumPy arrays for results handed to TensorFlow by `tf.numpy_function`.

A result TensorFlow takes from NumPy keeps the array's memory (no copy, where the array is
aligned as TensorFlow's own buffers are) and holds a reference to it until the tensor is
dropped. A fresh array of more than 32 MB is mapped anew by glibc on every call, and touching
its pages cost about as much as the transform that fills it (docs/performance.md, stop 45);
TensorFlow's allocator keeps its memory, and so does this pool: an array is handed out again
once nothing but the pool refers to it.

A request takes the smallest free array large enough and at most twice as large (sizes rounded
up to classes at most an eighth apart), as an allocator would. Free arrays are kept up to the
most the pool had in use at once over its recent requests (at least `keep_bytes`), least
recently used dropped first: an evaluation finds what the one before it left, and a process
that meets many image sizes holds about what its largest recent evaluation needs, not one set
per size.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

ALIGNMENT = 64  # bytes: TensorFlow's CPU allocator aligns to 64, and copies a result that is not
_STEPS = 8  # size classes per doubling


def size_class(elements: int) -> int:
    """`elements` rounded up to the pool's next size class (at most an eighth more)."""
    if elements <= _STEPS:
        return max(1, elements)
    step = 1 << max(0, elements.bit_length() - 1 - 3)
    return -(-elements // step) * step


class HostBuffers:
    """A pool of aligned NumPy arrays for `tf.numpy_function` results (see the module)."""

    def __init__(self, keep_bytes: int, window: int = 2048):
        self.keep_bytes = keep_bytes
        self.window = window  # requests over which the most in use is remembered
        self._owners: list[np.ndarray] = []  # least recently taken first
        self._lock = threading.Lock()
        self._requests = 0
        self._peaks = [0, 0]  # the most in use in this window and the one before

    def _free(self, index: int) -> bool:
        # Only the pool's list and getrefcount's argument: every view of an owner (what
        # TensorFlow holds, however derived) refers to it as its base.
        return sys.getrefcount(self._owners[index]) <= 2

    def take(self, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """An aligned, C-ordered array of `shape` and `dtype` that no tensor or array outside
        the pool refers to; its contents are left as they were."""
        dtype = np.dtype(dtype)
        elements = int(np.prod(shape, dtype=np.int64))
        capacity = size_class(elements) * dtype.itemsize + ALIGNMENT
        with self._lock:
            # The smallest free array large enough (best fit, as an allocator would), and not
            # more than twice as large: a small result does not hold a large array.
            fits = [(self._owners[i].size, i) for i in range(len(self._owners))
                    if capacity <= self._owners[i].size <= 2 * capacity and self._free(i)]
            index = min(fits)[1] if fits else None
            if index is None:
                self._owners.append(np.empty(capacity, np.uint8))
            else:  # most recently taken last
                self._owners.append(self._owners.pop(index))
            owner = self._owners[-1]
            start = -owner.ctypes.data % ALIGNMENT
            view = owner[start:start + elements * dtype.itemsize].view(dtype).reshape(shape)
            del owner
            self._trim()
        return view

    def _trim(self) -> None:
        self._requests += 1
        if self._requests % self.window == 0:
            self._peaks = [0, self._peaks[0]]
        free = sum(self._owners[i].size for i in range(len(self._owners)) if self._free(i))
        in_use = sum(owner.size for owner in self._owners) - free
        self._peaks[0] = max(self._peaks[0], in_use)
        excess = free - max(self.keep_bytes, *self._peaks)
        index = 0
        while excess > 0 and index < len(self._owners):  # least recently taken first
            if self._free(index):
                excess -= self._owners.pop(index).size
            else:
                index += 1

    def held_bytes(self) -> tuple[int, int]:
        """(bytes the pool holds, of which free)."""
        with self._lock:
            total = sum(owner.size for owner in self._owners)
            free = sum(self._owners[i].size for i in range(len(self._owners)) if self._free(i))
        return total, free

    def clear(self) -> None:
        """Drop every free array (those still referred to stay in use until dropped)."""
        with self._lock:
            self._owners = [self._owners[i] for i in range(len(self._owners))
                            if not self._free(i)]
