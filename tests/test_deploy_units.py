"""The systemd units in deploy/systemd: they verify, they are hardened, and ingle runs under their limits."""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "deploy" / "systemd"
INSTALLED_INGLE = "/opt/ingle/venv/bin/ingle"
# `systemd-analyze security --threshold=` compares against the exposure ×10 (0-100; the
# default is 100): 20 means the "2.0 OK" the issue asks for.
THRESHOLD = 20

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is missing (apt-get install systemd)"
)


def directives(path: Path) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file, in order per key (systemd allows a key several times)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def unit_tree(tmp_path: Path, *, gpu: bool = False) -> Path:
    """The units in a search-path folder, ExecStart pointing at this venv's real `ingle`.

    `systemd-analyze verify` checks that ExecStart's binary exists and is executable;
    /opt/ingle is not installed here, so the path is swapped for the real one and
    nothing else changes.
    """
    ingle = str(Path(sys.executable).parent / "ingle")
    tree = tmp_path / "units"
    tree.mkdir(parents=True)
    for unit in ("ingle.service", "ingle-bot@.service"):
        (tree / unit).write_text((UNITS / unit).read_text().replace(INSTALLED_INGLE, ingle))
    shutil.copytree(UNITS / "ingle-bot@slack.service.d", tree / "ingle-bot@slack.service.d")
    if gpu:
        (tree / "ingle.service.d").mkdir()
        shutil.copy(UNITS / "ingle-gpu.conf", tree / "ingle.service.d" / "gpu.conf")
    return tree


def analyze(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze with `tree` first in the unit search path (trailing ':' keeps the defaults)."""
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tree}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, env=env, cwd=tree, timeout=120, check=False
    )


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", output)
    assert match, output
    return float(match.group(1))


@needs_analyze
@pytest.mark.parametrize("units", [["ingle.service"], ["ingle-bot@telegram.service", "ingle-bot@slack.service"]])
@pytest.mark.parametrize("gpu", [False, True])
def test_units_verify(tmp_path: Path, units: list[str], gpu: bool) -> None:
    result = analyze(unit_tree(tmp_path, gpu=gpu), "verify", "--man=no", "--generators=no", *units)
    assert result.returncode == 0, result.stderr
    assert "ingle" not in result.stderr, result.stderr  # no warning about our units either


@needs_analyze
@pytest.mark.parametrize("unit", ["ingle.service", "ingle-bot@telegram.service", "ingle-bot@slack.service"])
def test_units_rate_ok_in_the_offline_security_review(tmp_path: Path, unit: str) -> None:
    result = analyze(unit_tree(tmp_path), "security", "--offline=yes", f"--threshold={THRESHOLD}", unit)
    assert result.returncode == 0, result.stdout + result.stderr
    assert exposure(result.stdout) <= 2.0


@needs_analyze
def test_the_gpu_drop_in_stays_well_hardened(tmp_path: Path) -> None:
    result = analyze(unit_tree(tmp_path, gpu=True), "security", "--offline=yes", "ingle.service")
    cpu = analyze(unit_tree(tmp_path / "cpu"), "security", "--offline=yes", "ingle.service")
    # It relaxes devices, MDWE and @resources only; that must not cost more than a point.
    assert exposure(cpu.stdout) < exposure(result.stdout) <= exposure(cpu.stdout) + 1.0, result.stdout


def test_service_unit_runs_ingle_serve_as_a_notify_service() -> None:
    unit = directives(UNITS / "ingle.service")
    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == [f"{INSTALLED_INGLE} serve"]
    assert unit["User"] == ["ingle"] and unit["Group"] == ["ingle"]
    assert unit["StateDirectory"] == ["ingle"] and unit["ConfigurationDirectory"] == ["ingle"]
    environment = " ".join(unit["Environment"])
    assert "INGLE_HOME=/var/lib/ingle" in environment
    assert "INGLE_CONFIG=/etc/ingle/ingle.toml" in environment
    assert unit["Restart"] == ["on-failure"]
    for key in ("StartLimitIntervalSec", "StartLimitBurst", "WatchdogSec", "TimeoutStopSec"):
        assert key in unit, key


@pytest.mark.parametrize("unit_file", ["ingle.service", "ingle-bot@.service"])
def test_units_carry_the_hardening_directives(unit_file: str) -> None:
    unit = directives(UNITS / unit_file)
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallArchitectures": "native",
        "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "RestrictNamespaces": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "ProtectProc": "invisible",
        "UMask": "0077",
        "RemoveIPC": "yes",
        "PrivateUsers": "yes",
        "DevicePolicy": "closed",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    assert unit["SystemCallFilter"][0] == "@system-service"


def test_service_is_reachable_from_loopback_only() -> None:
    unit = directives(UNITS / "ingle.service")
    assert unit["IPAddressDeny"] == ["any"]
    assert unit["IPAddressAllow"] == ["localhost"]


def test_bot_reads_its_token_from_a_credential_never_from_the_unit() -> None:
    unit = directives(UNITS / "ingle-bot@.service")
    assert unit["ExecStart"] == [f"{INSTALLED_INGLE} bot %i"]
    assert unit["LoadCredential"] == ["%i-token:/etc/ingle/credentials/%i-token"]
    assert "INGLE_BOT_TOKEN_FILE=%d/%i-token" in unit["Environment"]
    assert not any("TOKEN=" in value.split("_FILE=")[0] for value in unit["Environment"])


def test_gpu_drop_in_opens_only_gpu_devices() -> None:
    drop_in = directives(UNITS / "ingle-gpu.conf")
    assert drop_in["PrivateDevices"] == ["no"]
    assert drop_in["DevicePolicy"] == ["closed"]
    allowed = {value.split()[0] for value in drop_in["DeviceAllow"]}
    assert allowed == {"char-nvidia*", "char-kfd", "char-drm"}
    # Nothing else of the sandbox is switched off.
    relaxed = {"PrivateDevices", "DevicePolicy", "DeviceAllow", "SupplementaryGroups", "PrivateUsers"}
    relaxed |= {"MemoryDenyWriteExecute", "SystemCallFilter"}
    assert set(drop_in) <= relaxed


def _libseccomp_available() -> bool:
    return ctypes.util.find_library("seccomp") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _libseccomp_available(), reason="libseccomp is not installed")
def test_the_model_runs_under_the_units_seccomp_filters(default_model_home: Path) -> None:
    """MemoryDenyWriteExecute=yes and ~@resources do not break llama.cpp's CPU build or ctypes callbacks.

    llama_cpp registers a ctypes log callback at import (a libffi closure); the
    load and decode run on the scheduler thread. All of it under the same filters.
    """
    env = {**os.environ, "INGLE_HOME": str(default_model_home), "INGLE_EMBEDDED": "1", "INGLE_NUM_THREADS": "2"}
    helper = Path(__file__).with_name("seccomp_exec.py")
    ingle = str(Path(sys.executable).parent / "ingle")
    probe = (
        "import ctypes, mmap\n"
        "try:\n    mmap.mmap(-1, 4096, prot=7)\nexcept OSError:\n    print('wx refused')\n"
        "callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)\n"
        "print('callback', callback(41))\n"
    )
    sandboxed = subprocess.run(
        [sys.executable, str(helper), sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert sandboxed.stdout.split("\n")[:2] == ["wx refused", "callback 42"], sandboxed.stderr

    result = subprocess.run(
        [sys.executable, str(helper), ingle, "run", "qwen2.5-coder:0.5b", "--max-tokens", "8", "Say hello"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
