"""Check a GGUF header's counts and lengths against the file's size before anything parses it.

The `gguf` package's reader trusts the counts a header claims: an array that
claims 2^62 elements in a 178-byte file makes it loop for ever, building
Python objects from reads past the end (Ollama's CVE-2024-39720 is this class
of bug). This walk reads only the lengths and counts, never the values, and
refuses any that cannot fit in what is left of the file, so every loop it or
the reader then makes is bounded by the file's size.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

# GGUF value types and their sizes in bytes (gguf.GGUFValueType numbering).
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING = 8
_ARRAY = 9
_MAX_NESTING = 8
"""Arrays of arrays are allowed by the format; no real model nests more than one level."""
_MAX_DIMENSIONS = 8
"""llama.cpp's tensors have at most 4 dimensions (GGML_MAX_DIMS); 8 leaves room."""


class HeaderOutOfBounds(ValueError):
    """A count or length in the header cannot fit in the file; the message says which."""


class _Walker:
    def __init__(self, data: mmap.mmap | bytes, byte_order: str) -> None:
        self._data = data
        self._order = byte_order
        self.offset = 0

    def need(self, count: int, what: str) -> None:
        left = len(self._data) - self.offset
        if count > left:
            raise HeaderOutOfBounds(f"{what} needs {count} bytes but only {left} are left in the file")

    def integer(self, fmt: str, what: str) -> int:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(self._order + fmt, self._data, self.offset)
        self.offset += size
        return int(value)

    def skip_string(self, what: str) -> str:
        """Step over a string; returns its first 80 bytes as text, to name it in a message."""
        length = self.integer("Q", what)
        self.need(length, what)
        start, self.offset = self.offset, self.offset + length
        return bytes(self._data[start : start + min(length, 80)]).decode("utf-8", "replace")

    def skip_value(self, value_type: int, what: str, depth: int = 0) -> None:
        if value_type in _SCALAR_SIZES:
            self.need(_SCALAR_SIZES[value_type], what)
            self.offset += _SCALAR_SIZES[value_type]
        elif value_type == _STRING:
            self.skip_string(what)
        elif value_type == _ARRAY:
            if depth >= _MAX_NESTING:
                raise HeaderOutOfBounds(f"{what} nests arrays more than {_MAX_NESTING} deep")
            item_type = self.integer("I", what)
            count = self.integer("Q", what)
            # Every item takes at least one byte (a string or an array at least 8): a count
            # the rest of the file cannot hold is refused before the loop below starts.
            self.need(count * _SCALAR_SIZES.get(item_type, 8), f"{what} ({count} items)")
            if item_type in _SCALAR_SIZES:
                self.offset += count * _SCALAR_SIZES[item_type]
            else:
                for _ in range(count):
                    self.skip_value(item_type, what, depth + 1)
        else:
            raise HeaderOutOfBounds(f"{what} has unknown value type {value_type}")


def check_header_bounds(path: Path) -> None:
    """Raise HeaderOutOfBounds if a count or length in `path`'s GGUF header overruns the file.

    Expects the caller to have checked the magic bytes. Reads the metadata and
    tensor table only (a few hundred milliseconds for a 150k-token vocabulary).
    """
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if len(data) < 24:
            raise HeaderOutOfBounds("the header is shorter than its 24 fixed bytes")
        # A big-endian file's version reads as a huge number little-endian (the reader does the same).
        (version,) = struct.unpack_from("<I", data, 4)
        walker = _Walker(data, "<" if version & 0xFFFF else ">")
        walker.offset = 8
        tensor_count = walker.integer("Q", "the tensor count")
        field_count = walker.integer("Q", "the metadata count")
        # The smallest field is a key length, a type and a one-byte value (13 bytes); the
        # smallest tensor entry a name length, a dimension count, a type and an offset (24).
        walker.need(field_count * 13, f"{field_count} metadata fields")
        for index in range(field_count):
            what = f"metadata field '{walker.skip_string(f'metadata field {index}')}'"
            walker.skip_value(walker.integer("I", what), what)
        walker.need(tensor_count * 24, f"{tensor_count} tensors")
        size_in_bits = len(data) * 8
        for index in range(tensor_count):
            what = f"tensor '{walker.skip_string(f'tensor {index}')}'"
            dimensions = walker.integer("I", what)
            if dimensions > _MAX_DIMENSIONS:
                raise HeaderOutOfBounds(f"{what} claims {dimensions} dimensions")
            elements = 1
            for _ in range(dimensions):
                elements *= walker.integer("Q", what)
            # Every GGML type stores an element in at least one bit.
            if elements > size_in_bits:
                raise HeaderOutOfBounds(f"{what} claims {elements} elements, more than the file can hold")
            walker.integer("I", f"{what}'s type")
            walker.integer("Q", f"{what}'s offset")
