"""`ingle doctor`: check that this machine can run `ingle serve`, and say in plain words what to fix.

Each check is a small function returning a `Check`; the command prints one
line per check (✓ or ✗ with what to do) and exits 1 if any failed. The checks
only look: they create no folder (an admin often runs this as root, and a
root-owned folder in the service's home would break the service); opening an
existing store only tidies its stray temporary files, as every command does.
"""

from __future__ import annotations

import errno
import importlib
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import psutil
import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.text import Text

from ingle.core.errors import IngleError
from ingle.core.manifest import Manifest
from ingle.core.memory import MIB, attention_span, default_parallel, estimate_memory, format_bytes
from ingle.core.settings import Settings, default_config_file, load_settings, settings_problem
from ingle.core.sources import DEFAULT_MODEL_NAME
from ingle.core.store import ModelStore

from ..binding import is_loopback

COMMAND = "doctor"
DOCTOR_HELP = """Check that ingle can run here: config, model store, disk, memory, model, runtime, port, security.

Prints one line per check, ✓ or ✗ with what to do, and exits 1 if any check failed.
Run it as the user the service runs as, so that permissions are checked for that user.

Examples:
  ingle doctor
  sudo -u ingle /opt/ingle/venv/bin/ingle doctor
"""
# Below this a pull cannot finish and the daemon's state writes start failing.
MIN_FREE_DISK = 1024 * MIB
_PORT_PROBE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, whether it is fine, and a sentence saying what was seen or what to do."""

    name: str
    ok: bool
    detail: str


@dataclass
class DoctorContext:
    """What the app callback hands to `ingle doctor` instead of settings, so a bad config is a check, not an exit."""

    home: str | None
    out: Console


def register(app: typer.Typer) -> None:
    """Add `ingle doctor` to the app."""
    app.command(COMMAND, help=DOCTOR_HELP)(doctor)


def doctor(
    ctx: typer.Context,
    skip_port: Annotated[
        bool, typer.Option("--skip-port", help="Do not probe the port, e.g. on a machine where ingle will not listen.")
    ] = False,
) -> None:
    """Run every check and print the findings."""
    context = ctx.find_object(DoctorContext)
    if context is None:
        raise RuntimeError("the ingle app callback did not run before `ingle doctor`")
    checks = run_checks(context.home, skip_port=skip_port)
    for check in checks:
        mark, style = ("✓", "green") if check.ok else ("✗", "red")
        line = Text()
        line.append(f"{mark} ", style=style)
        line.append(f"{check.name}: ", style="bold")
        line.append(check.detail)
        context.out.print(line, soft_wrap=True)  # one line per check, also when piped
    failed = sum(not check.ok for check in checks)
    if failed:
        context.out.print(f"{failed} check{'s' if failed > 1 else ''} failed.")
        raise typer.Exit(1)
    context.out.print("All checks passed.")


def run_checks(home: str | Path | None, *, skip_port: bool = False) -> list[Check]:
    """The findings, in the order an admin fixes them: config first, since every other check reads it."""
    config = check_config(home)
    settings = config[1]
    if settings is None:
        return [config[0], Check("other checks", False, "skipped until the config file parses.")]
    checks: list[Callable[[Settings], Check]] = [
        check_store,
        check_disk,
        check_default_model,
        check_memory,
        check_runtime,
        check_bind_security,
    ]
    if not skip_port:
        checks.append(check_port)
    running = [] if skip_port else check_running_services(settings)
    return [config[0], *(check(settings) for check in checks), *contributed_checks(settings), *running]


def contributed_checks(settings: Settings) -> list[Check]:
    """The checks of the folders built on adapters (`ingle.doctor` entry points: the `[bots.*]` sections).

    bots/ depends on adapters, never the reverse (DESIGN.md), so they are found at run time, as commands are.
    """
    found: list[Check] = []
    for entry in sorted(entry_points(group="ingle.doctor"), key=lambda entry: entry.name):
        try:
            found.extend(entry.load()(settings))
        except ImportError as error:
            found.append(Check(entry.name, False, f"its checks do not load ({error}); reinstall ingle."))
    return found


def check_config(home: str | Path | None) -> tuple[Check, Settings | None]:
    """The config file and INGLE_* variables parse into settings."""
    path = default_config_file()
    try:
        settings = load_settings(home=home)
    except (ValidationError, SettingsError, OSError, ValueError) as error:
        problem = settings_problem(error, {"home": home})
        if problem is None:
            raise
        return Check("config", False, problem), None
    where = f"read {path}" if path.is_file() else f"no file at {path}, using defaults and INGLE_* variables"
    return Check("config", True, f"{where}; home is {settings.home}."), settings


def check_store(settings: Settings) -> Check:
    """The model store is readable and writable and its manifests are consistent."""
    root = settings.models_dir
    if not root.exists():
        parent = _existing_parent(root)
        if os.access(parent, os.W_OK | os.X_OK):
            return Check("model store", True, f"{root} does not exist yet; it is created on first use.")
        return Check(
            "model store", False, f"{root} does not exist and {parent} is not writable: create it for this user."
        )
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        return Check("model store", False, f"{root} is not readable and writable by this user: fix its owner.")
    try:
        store = _open_store(root)
    except IngleError as error:
        return Check("model store", False, error.message)
    if store is None:
        return Check("model store", True, f"{root} holds no models yet.")
    if store.problems:
        listed = "; ".join(f"{problem.path} is {problem.kind} ({problem.reason})" for problem in store.problems)
        return Check(
            "model store",
            False,
            f"{listed}. Remove the damaged names with `ingle rm`, or pull the model again.",
        )
    return Check("model store", True, f"{root} is readable and writable, {len(store.list())} model(s), no problems.")


def check_disk(settings: Settings) -> Check:
    """Enough free disk under home for a pull and the daemon's state."""
    where = _existing_parent(settings.home)
    free = shutil.disk_usage(where).free
    if free < MIN_FREE_DISK:
        return Check(
            "disk",
            False,
            f"only {format_bytes(free)} free under {where}; free at least {format_bytes(MIN_FREE_DISK)}.",
        )
    return Check("disk", True, f"{format_bytes(free)} free under {where}.")


def check_default_model(settings: Settings) -> Check:
    """The default model is in the store."""
    name = settings.default_model
    found = _default_manifest(settings)
    if found is None:
        how = "ingle pull default" if name == DEFAULT_MODEL_NAME else f"ingle pull <source> --name {name}"
        return Check("default model", False, f"{name} is not in the store; get it with `{how}`.")
    return Check("default model", True, f"{name} is present ({format_bytes(found.size)}).")


def check_memory(settings: Settings) -> Check:
    """The default model, with its KV cache for every sequence, fits in this machine's memory."""
    manifest = _default_manifest(settings)
    total = psutil.virtual_memory().total
    budget = total - settings.memory_headroom_mib * MIB
    if settings.memory_limit_mib is not None:
        budget = min(budget, settings.memory_limit_mib * MIB)
    if manifest is None:
        return Check("memory", True, f"{format_bytes(budget)} usable; the default model is missing, so no estimate.")
    # The engine's own shape: num_parallel sequences of num_ctx tokens, capped at the trained context.
    per_sequence = min(settings.num_ctx, manifest.gguf.context_length or settings.num_ctx)
    from ingle.core.engine import default_threads  # llama.cpp: loaded only when `ingle doctor` runs

    cores = settings.num_threads or default_threads()
    cache_type = settings.kv_cache_type_in_use
    shared = settings.kv_reuse_min_tokens > 0
    sequences = settings.num_parallel or default_parallel(manifest, per_sequence, cores, budget, cache_type, shared)
    tokens = per_sequence * sequences
    span = attention_span(settings.flash_attention, per_sequence, tokens, shared)
    need = estimate_memory(manifest, tokens, settings.num_batch, span, cache_type, shared).total
    if need > budget:
        return Check(
            "memory",
            False,
            f"{manifest.name} needs about {format_bytes(need)} but only {format_bytes(budget)} is usable; "
            "lower num_ctx or num_parallel (or num_batch), or pick a smaller model.",
        )
    return Check("memory", True, f"{manifest.name} needs about {format_bytes(need)} of {format_bytes(budget)} usable.")


def check_runtime(settings: Settings) -> Check:
    """llama-cpp-python imports, and whether it was built for a GPU."""
    try:
        llama_cpp = importlib.import_module("llama_cpp")
    except (ImportError, OSError) as error:
        return Check(
            "llama.cpp",
            False,
            f"llama-cpp-python does not load ({error}); reinstall it into this venv (see README, Building).",
        )
    # These load llama_cpp, which may not load: after the check above.
    from ingle.core.runtime import reference_kernels
    from ingle.core.runtime.llama_model import model_params, runs_amx

    build = "GPU offload build" if llama_cpp.llama_supports_gpu_offload() else "CPU build"
    if runs_amx():
        build += "; this CPU has AMX, whose llama.cpp kernels crash, so weights stay unpacked (README, Building)"
    if not reference_kernels.reachable():
        if settings.deterministic:
            return Check(
                "llama.cpp",
                False,
                f"llama-cpp-python {llama_cpp.__version__} does not let ingle reach llama.cpp's reference kernels, "
                "which deterministic needs: install the version pyproject.toml names, or set deterministic = false.",
            )
        build += (
            "; its reference kernels are out of reach, so speculative guesses can tip a greedy answer at a near tie"
        )
    elif model_params(repack=not settings.deterministic).use_extra_bufts:
        build += (
            "; it repacks the weights on this CPU, so speculative guesses can tip a greedy answer at a near tie "
            "(deterministic = true rules it out; README, Speculative decoding)"
        )
    return Check("llama.cpp", True, f"llama-cpp-python {llama_cpp.__version__}, {build}.")


def check_bind_security(settings: Settings) -> Check:
    """An API key protects any address beyond loopback."""
    if is_loopback(settings.host):
        key = "an API key is set" if settings.requires_key() else "no API key (fine on loopback)"
        return Check("security", True, f"listening on loopback ({settings.host}), {key}.")
    if not settings.requires_key():
        return Check(
            "security",
            False,
            f"host is {settings.host}, reachable from other machines, but no api_key is set: "
            "set api_key in the config file or listen on 127.0.0.1.",
        )
    return Check("security", True, f"listening on {settings.host} with an API key.")


def check_port(settings: Settings) -> Check:
    """The port is free, or an ingle already answers on it."""
    if settings.port == 0:
        return Check("port", True, "port 0: the system picks a free one at start.")
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((settings.host, settings.port))
        except OSError as error:
            taken = error.errno == errno.EADDRINUSE
            if not taken:
                return Check("port", False, f"cannot bind {settings.host}:{settings.port} ({error.strerror}).")
        else:
            return Check("port", True, f"{settings.host}:{settings.port} is free.")
    if _ingle_answers(settings):
        return Check("port", True, f"an ingle is already answering on {settings.host}:{settings.port}.")
    return Check(
        "port",
        False,
        f"{settings.host}:{settings.port} is taken by another program; stop it or set another port.",
    )


def check_running_services(settings: Settings) -> list[Check]:
    """Each service (configured bot) of an ingle answering on the port is running, as its /health says."""
    health = _daemon_health(settings) if settings.port else None
    services = health.get("services") if health else None
    if not isinstance(services, dict):
        return []
    return [
        Check(str(name), True, "running in the daemon.")
        if state == "running"
        else Check(str(name), False, f"{state} in the daemon; its log says why (journalctl -u ingle).")
        for name, state in sorted(services.items())
    ]


def _ingle_answers(settings: Settings) -> bool:
    health = _daemon_health(settings)
    return health is not None and health.get("status") == "ok"


def _daemon_health(settings: Settings) -> dict[str, object] | None:
    """What an ingle on the configured port answers at /health, or None if nothing (or not ingle) answers."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else "::1" if settings.host == "::" else settings.host
    url_host = f"[{host}]" if ":" in host else host
    import httpx  # loaded only when `ingle doctor` runs

    try:
        answer = httpx.get(f"http://{url_host}:{settings.port}/health", timeout=_PORT_PROBE_TIMEOUT)
        health = answer.json() if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return health if isinstance(health, dict) else None


def _default_manifest(settings: Settings) -> Manifest | None:
    store = _open_store(settings.models_dir)
    if store is None:
        return None
    try:
        return store.get(settings.default_model)
    except IngleError:
        return None


def _open_store(root: Path) -> ModelStore | None:
    """The store at `root`, or None when it has no blobs/manifests folders yet (opening would create them)."""
    if not all(os.access(root / sub, os.R_OK | os.X_OK) for sub in ("blobs", "manifests")):
        return None
    return ModelStore(root)


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
