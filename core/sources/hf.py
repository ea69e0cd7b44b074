"""`hf:owner/repo/path/file.gguf[@revision]`: a GGUF file from Hugging Face or a mirror of it."""

from __future__ import annotations

import re
from urllib.parse import quote, urljoin, urlsplit

import httpx

from ..errors import DigestMismatch, SourceError
from ..manifest import GgufInfo
from ..names import ModelName
from ..settings import Settings
from ..store import ModelStore
from .base import InvalidSourceSpec, safe_name_part, split_quantization
from .download import commit, download, http_client, partial_lock, transport_error
from .network import NetworkGuard
from .progress import ProgressCallback, ProgressReporter

_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def lfs_sha256(headers: httpx.Headers) -> str | None:
    """The sha256 Hugging Face gives for an LFS file (`X-Linked-Etag`, else `ETag`), if it is one."""
    for key in ("X-Linked-Etag", "ETag"):
        value = headers.get(key)
        if value:
            value = value.removeprefix("W/").strip('"').lower()
            return value if _SHA256_HEX.fullmatch(value) else None
    return None


class HfSource:
    """A file in a Hugging Face model repository, at a branch, tag or commit (default `main`)."""

    def __init__(self, spec: str, settings: Settings, expected_digest: str | None = None) -> None:
        self.spec = spec
        body = spec.removeprefix("hf:").strip().strip("/")
        path_part, at, revision = body.rpartition("@")
        if not at:
            path_part, revision = body, "main"
        parts = path_part.split("/")
        if (
            len(parts) < 3
            or not all(_REPO_PART.fullmatch(p) for p in parts[:2])
            or any(p in ("", ".", "..") for p in parts)
            or not parts[-1].lower().endswith(".gguf")
            or not revision
        ):
            raise InvalidSourceSpec(
                f"'{spec}' is not a Hugging Face source: write hf:owner/repo/file.gguf, optionally @revision."
            )
        self.owner, self.repo, self.path, self.revision = parts[0], parts[1], "/".join(parts[2:]), revision
        self.url = (
            f"{settings.hf_endpoint.rstrip('/')}/{self.owner}/{self.repo}/resolve/"
            f"{quote(revision, safe='')}/{quote(self.path)}"
        )
        self.token = settings.hf_token.get_secret_value() if settings.hf_token else None
        self.guard: NetworkGuard | None = None
        self.expected_digest = expected_digest
        self.expected_hex = expected_digest.removeprefix("sha256-") if expected_digest else None
        self.gguf_info: GgufInfo | None = None

    @property
    def label(self) -> str:
        """owner/repo/path, as messages name the file."""
        return f"{self.owner}/{self.repo}/{self.path}"

    def default_name(self) -> ModelName:
        """`<repo>:<quantization from the file name, else 'latest'>`, lowercased."""
        stem = self.path.rsplit("/", 1)[-1][: -len(".gguf")]
        quantization = split_quantization(stem)[1]
        return ModelName.parse(f"{safe_name_part(self.repo)}:{quantization or 'latest'}")

    def _status_message(self, status: int) -> str:
        if status in (401, 403, 404):
            return f"Hugging Face answered {status} for {self.label}: check the name, or set hf_token for a gated repo."
        return f"Hugging Face answered {status} for {self.label}; try again later."

    async def _linked_sha256(self, client: httpx.AsyncClient) -> str | None:
        """HEAD the resolve URL without leaving the hub, as huggingface_hub does, for the LFS sha256."""
        url = self.url
        for _hop in range(5):
            response = await client.head(url, follow_redirects=False)
            if response.status_code in (405, 501):
                return None  # a mirror without HEAD: the GET will tell whether the file exists
            sha = lfs_sha256(response.headers)
            if sha or not response.is_redirect:
                if response.status_code >= 400:
                    raise SourceError(self._status_message(response.status_code))
                return sha
            location = response.headers.get("Location", "")
            # Only relative redirects stay on the hub (a renamed repo); others go to the CDN.
            if urlsplit(location).netloc:
                return None
            url = urljoin(url, location)
        return None

    async def fetch(self, store: ModelStore, progress: ProgressCallback | None = None) -> str:
        """Download the file (resuming a partial one), check its sha256, put it in the store."""
        reporter = ProgressReporter(progress)
        reporter.status(f"pulling {self.label}")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        hint = ", or set hf_endpoint to a reachable mirror"
        async with http_client(headers, self.guard) as client:
            try:
                linked = await self._linked_sha256(client)
            except httpx.RequestError as error:
                raise transport_error(error, self.url, hint) from error
            if self.expected_hex and linked and linked != self.expected_hex:
                raise DigestMismatch(
                    f"Hugging Face lists sha256-{linked} for {self.label}, not the expected sha256-{self.expected_hex}."
                )
            expected = self.expected_hex or linked
            if expected and store.has_blob(f"sha256-{expected}"):
                return f"sha256-{expected}"
            async with partial_lock(store.partial_path(self.url)):
                downloaded = await download(
                    client,
                    store,
                    self.url,
                    expected_hex=expected,
                    reporter=reporter,
                    label=self.path.rsplit("/", 1)[-1],
                    status_message=self._status_message,
                    network_hint=hint,
                )
                return commit(store, downloaded)
