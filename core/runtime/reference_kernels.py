"""llama.cpp's reference CPU kernels, switched on and off per decode: every row of a batch then adds up as it
would alone.

Why: llama.cpp's CPU backend chooses its kernels by the shape of each batch
(tiled K-quant matrix products from eight rows, tiled flash attention from 64
rows of one sequence, a lone token's attention split across the threads once
512 cells are cached), and each adds up in its own order. So a token's logits
differ in their last bits with what it is decoded beside, and greedy answers
part where two tokens are nearly tied: with speculative guesses or without,
alone or beside other users. ggml's CPU backend has a switch to its reference
kernels, read at every decode (`ggml_backend_cpu_set_use_ref`). Answer steps
cost the same with it on the 2-core CPU; prompts read 1.9-3x slower (README,
"Speculative decoding"). It does not reach the kernels for repacked weights
(model_params), which have no reference version.

How: llama.h gives no way to reach a context's CPU backend, so ingle catches
it as the context makes it. The CPU device keeps its functions in a table of
pointers (ggml's `ggml_backend_device_i`, held by value inside the device, in
writable memory). While ingle creates a context, the table's `init_backend`
entry points to a hook that records the backend it returns, and the entry is
put back right after. The table's layout is that of the llama-cpp-python
pyproject.toml pins, and it is checked before anything is written: the word
after the table must be the device's registry as ggml reports it. Where a
check fails, contexts are made as before and keep the default kernels.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

from llama_cpp._ggml import libggml

log = logging.getLogger("ingle.llama")

T = TypeVar("T")

_CPU_DEVICE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU
_TABLE_ENTRIES = 15  # functions in ggml_backend_device_i; the device's registry pointer follows them
_INIT_BACKEND = 5  # ggml_backend_device_i.init_backend

_InitBackend = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)
_SetUseRef = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_bool)

_catching = threading.Lock()


class ReferenceKernels:
    """The reference-kernel switch of one context's CPU backend."""

    def __init__(self, backend: int, set_use_ref: Callable[[int, bool], None]) -> None:
        self._backend = backend
        self._set_use_ref = set_use_ref
        self._on = False

    def use(self, on: bool) -> None:
        """Compute the next decodes with the reference kernels (True) or the fastest ones (False)."""
        if on != self._on:
            self._set_use_ref(self._backend, on)
            self._on = on


@dataclass(frozen=True)
class _CpuDevice:
    device: int
    """The ggml_backend_dev_t."""
    table: ctypes.Array[ctypes.c_void_p]
    """The device's function table and, after it, its registry pointer."""
    init_backend: int
    """The table's own init_backend entry."""
    set_use_ref: Callable[[int, bool], None]


@cache
def _cpu_device() -> _CpuDevice | None:
    """ggml's CPU device, if its layout is the one this module knows."""
    libggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    libggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    libggml.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    libggml.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    libggml.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    libggml.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    libggml.ggml_backend_get_device.argtypes = [ctypes.c_void_p]
    libggml.ggml_backend_get_device.restype = ctypes.c_void_p
    device = libggml.ggml_backend_dev_by_type(_CPU_DEVICE)
    if not device:
        return None
    table = (ctypes.c_void_p * (_TABLE_ENTRIES + 1)).from_address(device)
    registry = libggml.ggml_backend_dev_backend_reg(device)
    set_use_ref = libggml.ggml_backend_reg_get_proc_address(registry, b"ggml_backend_cpu_set_use_ref")
    if table[_TABLE_ENTRIES] != registry or not table[_INIT_BACKEND] or not set_use_ref:
        log.info("this llama.cpp build's CPU device is not laid out as ingle expects: default kernels only")
        return None
    return _CpuDevice(device, table, table[_INIT_BACKEND], _SetUseRef(set_use_ref))


def reachable() -> bool:
    """Whether contexts made in this process can switch to the reference kernels."""
    return _cpu_device() is not None


_made: list[int] | None = None
"""The backends made while a context is being created under _catching; None otherwise."""


@_InitBackend
def _record(device: int, params: bytes | None) -> int | None:
    # Lives as long as the process, so a thread that read the table's entry a moment before it was put back
    # still calls valid code.
    cpu_device = _cpu_device()
    assert cpu_device is not None  # the entry points here only once the device was found
    backend = _InitBackend(cpu_device.init_backend)(device, params)
    if _made is not None:
        _made.append(backend)
    return backend


def catch_cpu_backend(create: Callable[[], T]) -> tuple[T, ReferenceKernels | None]:
    """Run `create` (which makes one llama context) and return its result and the switch of the CPU backend
    it made, or None where that cannot be told."""
    global _made  # the hook above is C's callback: it has no other way to hand back what it saw
    device = _cpu_device()
    if device is None:
        return create(), None
    with _catching:
        _made = []
        device.table[_INIT_BACKEND] = ctypes.cast(_record, ctypes.c_void_p).value
        try:
            result = create()
        finally:
            device.table[_INIT_BACKEND] = device.init_backend
            made, _made = _made, None
    backends = [backend for backend in made if backend and libggml.ggml_backend_get_device(backend) == device.device]
    # Another thread making a context at the same moment (llama_cpp.Llama, say) would add its own.
    if len(backends) != 1:
        return result, None
    return result, ReferenceKernels(backends[0], device.set_use_ref)
