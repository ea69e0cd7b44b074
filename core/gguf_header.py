"""Read a GGUF file's header ourselves: the metadata and the tensor table, every count checked against the file.

The `gguf` package's reader trusts the counts a header claims (an array that
claims 2^62 elements in a 178-byte file makes it loop for ever, building
Python objects from reads past the end: Ollama's CVE-2024-39720 is this
class of bug), and it builds several Python objects per array item: on the
default model's 300k vocabulary and merges that was half a gigabyte and
seconds of CPU, and a 40 MB file of 5 million empty tokens took 8 GB. This
walk refuses any count that cannot fit in what is left of the file, keeps
the scalar and text values, and of the arrays only their lengths and the
vocabulary entries a caller asks about.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# GGUF value types (gguf.GGUFValueType numbering) and how they are stored.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING = 8
_ARRAY = 9
_MAX_NESTING = 8
"""Arrays of arrays are allowed by the format; no real model nests more than one level."""
_MAX_DIMENSIONS = 8
"""llama.cpp's tensors have at most 4 dimensions (GGML_MAX_DIMS); 8 leaves room."""
_DEFAULT_ALIGNMENT = 32
VOCABULARY_KEY = "tokenizer.ggml.tokens"


class HeaderOutOfBounds(ValueError):
    """A count or length in the header cannot fit in the file, or a value is malformed; the message says which."""


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor table."""

    name: str
    dimensions: tuple[int, ...]
    type: int
    """Its GGML type number (gguf.GGMLQuantizationType)."""
    offset: int
    """Where its data starts, from the start of the data section."""


@dataclass
class GgufHeader:
    """What a GGUF header says."""

    values: dict[str, Any] = field(default_factory=dict)
    """Every scalar and text value, by key."""
    array_lengths: dict[str, int] = field(default_factory=dict)
    """The item count of every array, by key."""
    vocabulary_found: set[str] = field(default_factory=set)
    """Those of the entries asked about that the vocabulary (`tokenizer.ggml.tokens`) holds."""
    tensors: list[TensorEntry] = field(default_factory=list)
    data_offset: int = 0
    """Where the tensor data starts in the file."""


class _Walker:
    def __init__(self, data: mmap.mmap | bytes, byte_order: str) -> None:
        self._data = data
        self._order = byte_order
        self.offset = 0

    def need(self, count: int, what: str) -> None:
        left = len(self._data) - self.offset
        if count > left:
            raise HeaderOutOfBounds(f"{what} needs {count} bytes but only {left} are left in the file")

    def scalar(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(self._order + fmt, self._data, self.offset)
        self.offset += size
        return value

    def raw_string(self, what: str) -> bytes:
        length = self.scalar("Q", what)
        self.need(length, what)
        start, self.offset = self.offset, self.offset + length
        return bytes(self._data[start : self.offset])

    def text(self, what: str) -> str:
        return self.raw_string(what).decode("utf-8", "replace")

    def value(self, value_type: int, what: str) -> Any:
        """A scalar or a string; an array is skipped (see array) and reads as None."""
        if value_type in _SCALARS:
            return self.scalar(_SCALARS[value_type], what)
        if value_type == _STRING:
            return self.text(what)
        if value_type == _ARRAY:
            self.array(what, _ignore)
            return None
        raise HeaderOutOfBounds(f"{what} has unknown value type {value_type}")

    def array(self, what: str, each_string: Callable[[bytes], None], depth: int = 0) -> int:
        """Step over an array, handing each string item's bytes to `each_string`; returns its item count."""
        if depth >= _MAX_NESTING:
            raise HeaderOutOfBounds(f"{what} nests arrays more than {_MAX_NESTING} deep")
        item_type = self.scalar("I", what)
        count = self.scalar("Q", what)
        # Every item takes at least one byte (a string or an array at least 8): a count
        # the rest of the file cannot hold is refused before the loop below starts.
        item_size = struct.calcsize(_SCALARS[item_type]) if item_type in _SCALARS else 8
        self.need(count * item_size, f"{what} ({count} items)")
        if item_type in _SCALARS:
            self.offset += count * item_size
        elif item_type == _STRING:
            for _ in range(count):
                each_string(self.raw_string(what))
        elif item_type == _ARRAY:
            for _ in range(count):
                self.array(what, _ignore, depth + 1)
        else:
            raise HeaderOutOfBounds(f"{what} has unknown value type {item_type}")
        return count


def _ignore(_item: bytes) -> None:
    pass


def _noter(found: set[str], wanted: set[bytes]) -> Callable[[bytes], None]:
    """Adds each vocabulary entry that is one of `wanted` to `found`."""

    def note(item: bytes) -> None:
        if item in wanted:
            found.add(item.decode())

    return note


def read_header(path: Path, vocabulary_entries: Iterable[str] = ()) -> GgufHeader:
    """The header of the GGUF file at `path`; HeaderOutOfBounds if a count or length in it overruns the file.

    Expects the caller to have checked the magic bytes. Reads the metadata
    and the tensor table only, never tensor data.
    """
    wanted = {entry.encode() for entry in vocabulary_entries}
    header = GgufHeader()
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if len(data) < 24:
            raise HeaderOutOfBounds("the header is shorter than its 24 fixed bytes")
        # A big-endian file's version reads as a huge number little-endian (the gguf package does the same).
        (version,) = struct.unpack_from("<I", data, 4)
        walker = _Walker(data, "<" if version & 0xFFFF else ">")
        walker.offset = 8
        tensor_count = walker.scalar("Q", "the tensor count")
        field_count = walker.scalar("Q", "the metadata count")
        # The smallest field is a key length, a type and a one-byte value (13 bytes); the
        # smallest tensor entry a name length, a dimension count, a type and an offset (24).
        walker.need(field_count * 13, f"{field_count} metadata fields")
        for index in range(field_count):
            key = walker.text(f"metadata field {index}")
            what = f"metadata field '{key[:80]}'"
            value_type = walker.scalar("I", what)
            if value_type == _ARRAY:
                note = _noter(header.vocabulary_found, wanted) if key == VOCABULARY_KEY else _ignore
                header.array_lengths[key] = walker.array(what, note)
            else:
                header.values[key] = walker.value(value_type, what)
        walker.need(tensor_count * 24, f"{tensor_count} tensors")
        size_in_bits = len(data) * 8
        for index in range(tensor_count):
            name = walker.text(f"tensor {index}")
            what = f"tensor '{name[:80]}'"
            count = walker.scalar("I", what)
            if count > _MAX_DIMENSIONS:
                raise HeaderOutOfBounds(f"{what} claims {count} dimensions")
            dimensions = tuple(walker.scalar("Q", what) for _ in range(count))
            elements = 1
            for size in dimensions:
                elements *= size
            # Every GGML type stores an element in at least one bit.
            if elements > size_in_bits:
                raise HeaderOutOfBounds(f"{what} claims {elements} elements, more than the file can hold")
            tensor_type = walker.scalar("I", f"{what}'s type")
            header.tensors.append(TensorEntry(name, dimensions, tensor_type, walker.scalar("Q", f"{what}'s offset")))
        alignment = header.values.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise HeaderOutOfBounds(f"general.alignment is {alignment!r}, not a power of two")
        header.data_offset = -(-walker.offset // alignment) * alignment
    return header
