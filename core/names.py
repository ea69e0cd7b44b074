"""Model names and blob digests, validated before any path is built from them.

A name is `[namespace/]model[:tag]`, like Ollama's. Every part is made of
letters, digits, `.`, `_` and `-`, never starts with a dot and never is `..`,
so a name maps to `manifests/<name>/<tag>.json` and cannot leave the store.
Names are case-insensitive, as Ollama's are: both parts are kept in lower case,
so `Coder:Latest` and `coder` are one model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidDigest, InvalidModelName

DIGEST_PATTERN = re.compile(r"^sha256-[0-9a-f]{64}$")
_PART = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,79}"
_NAME_PATTERN = re.compile(rf"^{_PART}(?:/{_PART}){{0,2}}$")
_TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DEFAULT_TAG = "latest"


@dataclass(frozen=True, order=True)
class ModelName:
    """A validated model name; `str()` gives the canonical `name:tag` form."""

    name: str
    tag: str = DEFAULT_TAG

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """Parse and validate `name[:tag]`; raise InvalidModelName with the reason."""
        text = text.strip()
        name, sep, tag = text.rpartition(":")
        if not sep or "/" in tag:
            name, tag = text, DEFAULT_TAG
        if not _NAME_PATTERN.fullmatch(name) or ".." in name:
            raise InvalidModelName(
                f"'{text}' is not a valid model name: use letters, digits, '.', '_' and '-', like 'qwen2.5-coder:0.5b'."
            )
        if not _TAG_PATTERN.fullmatch(tag) or ".." in tag:
            raise InvalidModelName(f"'{text}' has an invalid tag '{tag}': use letters, digits, '.', '_' and '-'.")
        return cls(name.lower(), tag.lower())

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


def validate_digest(digest: str) -> str:
    """Return `digest` if it is `sha256-<64 lowercase hex>`, else raise InvalidDigest."""
    if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
        raise InvalidDigest(f"'{digest}' is not a valid digest: expected 'sha256-' and 64 hex digits.")
    return digest


def digest_from_hex(hexdigest: str) -> str:
    """Turn a bare sha256 hex string (any case, optional `sha256:` prefix) into a digest."""
    cleaned = hexdigest.strip().lower().removeprefix("sha256:").removeprefix("sha256-")
    return validate_digest(f"sha256-{cleaned}")
