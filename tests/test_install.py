"""deploy/install.sh, run into a temporary root (`--root`), never against the real system."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ingle.core.settings import Settings

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install.sh"
UNITS = REPO / "deploy" / "systemd"


def run_install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run install.sh with `args`; stdin closed, output captured."""
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def tree_digest(root: Path) -> dict[str, str]:
    """Every path under `root` with its type, mode and content hash: what "changes nothing" compares."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        kind = "d" if stat.S_ISDIR(info.st_mode) else "f"
        content = hashlib.sha256(path.read_bytes()).hexdigest() if kind == "f" else ""
        found[str(path.relative_to(root))] = f"{kind} {stat.S_IMODE(info.st_mode):o} {content}"
    return found


def test_the_script_parses_and_passes_shellcheck() -> None:
    subprocess.run(["bash", "-n", str(INSTALL)], check=True, timeout=30)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout


def test_install_into_a_root_lays_out_config_state_and_units(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = run_install("--root", str(root), "--no-venv", "--gpu")
    assert result.returncode == 0, result.stderr

    config = root / "etc/ingle/ingle.toml"
    assert config.read_text() == (REPO / "deploy/ingle.toml.example").read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640  # it may hold the API key
    # The ingle group passes through (no listing) to read the management key; bot tokens stay root's (0600).
    assert stat.S_IMODE((root / "etc/ingle/credentials").stat().st_mode) == 0o710
    assert (root / "var/lib/ingle").is_dir()
    units = root / "etc/systemd/system"
    assert (units / "ingle.service").read_bytes() == (UNITS / "ingle.service").read_bytes()
    assert (units / "ingle-bot@.service").read_bytes() == (UNITS / "ingle-bot@.service").read_bytes()
    assert (units / "ingle.service.d/gpu.conf").read_bytes() == (UNITS / "ingle-gpu.conf").read_bytes()
    assert (units / "ingle-bot@slack.service.d/app-token.conf").is_file()
    assert not (root / "opt").exists()  # --no-venv


def test_install_writes_a_management_key_that_settings_read_and_keeps_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = run_install("--root", str(root), "--no-venv")
    assert first.returncode == 0, first.stderr
    key_file = root / "etc/ingle/credentials/management-key"
    assert "wrote the management key /etc/ingle/credentials/management-key" in first.stdout
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o640  # root and the ingle group
    key = key_file.read_text()
    assert len(key) == 65 and key.endswith("\n") and all(c in "0123456789abcdef" for c in key[:-1])
    secret = Settings(management_key_file=key_file).management_key()
    assert secret is not None and secret.get_secret_value() == key.strip()
    # The default location is the one install.sh writes to on a real system.
    # (The tests' own environment points INGLE_MANAGEMENT_KEY_FILE elsewhere: read the field's default.)
    assert Settings.model_fields["management_key_file"].default == Path("/etc/ingle/credentials/management-key")

    assert run_install("--root", str(root), "--no-venv").returncode == 0
    assert key_file.read_text() == key  # never replaced: clients that hold it keep working
    other = tmp_path / "other"
    assert run_install("--root", str(other), "--no-venv").returncode == 0
    assert (other / "etc/ingle/credentials/management-key").read_text() != key  # random, not a constant


def test_a_second_run_changes_nothing_and_keeps_an_edited_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run_install("--root", str(root), "--no-venv").returncode == 0
    config = root / "etc/ingle/ingle.toml"
    config.write_text('keep_alive = -1\napi_key = "mine"\n')
    before = tree_digest(root)

    again = run_install("--root", str(root), "--no-venv")

    assert again.returncode == 0, again.stderr
    assert tree_digest(root) == before
    assert "installed" not in again.stdout and "wrote" not in again.stdout


def test_destdir_works_like_root(tmp_path: Path) -> None:
    root = tmp_path / "staged"
    result = run_install("--no-venv", env={**os.environ, "DESTDIR": str(root)})
    assert result.returncode == 0, result.stderr
    assert (root / "etc/systemd/system/ingle.service").is_file()


def test_uninstall_keeps_models_and_config_unless_purged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run_install("--root", str(root), "--no-venv", "--gpu").returncode == 0
    model = root / "var/lib/ingle/models/blobs" / ("sha256-" + "0" * 64)
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights")
    (root / "opt/ingle/venv/bin").mkdir(parents=True)

    assert run_install("--root", str(root), "--uninstall").returncode == 0
    assert model.read_bytes() == b"weights"
    assert (root / "etc/ingle/ingle.toml").is_file()
    assert not (root / "opt/ingle").exists()
    assert not (root / "etc/systemd/system/ingle.service").exists()
    assert not (root / "etc/systemd/system/ingle.service.d").exists()

    assert run_install("--root", str(root), "--uninstall", "--purge").returncode == 0
    assert not (root / "var/lib/ingle").exists()
    assert not (root / "etc/ingle").exists()


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--purge"], "--purge only goes with --uninstall"),
        (["--find-links", "/nonexistent-wheelhouse"], "is not a directory"),
        (["--find-links", "/", "--index-url", "http://127.0.0.1:1/simple"], "not both"),
        (["--bogus"], "unknown option"),
        (["--source"], "--source needs"),
    ],
)
def test_bad_arguments_are_refused_in_one_sentence(tmp_path: Path, args: list[str], complaint: str) -> None:
    result = run_install("--root", str(tmp_path / "root"), "--no-venv", *args)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_help_lists_the_offline_options() -> None:
    result = run_install("--help")
    assert result.returncode == 0
    for option in ("--find-links", "--index-url", "--root", "--uninstall", "--purge", "--gpu"):
        assert option in result.stdout


def _tiny_ingle_wheel(wheelhouse: Path) -> Path:
    """A wheel named `ingle` whose console script prints a fixed line: the real pip path, offline, in seconds."""
    name, version = "ingle", "0.0.1"
    dist_info = f"{name}-{version}.dist-info"
    files = {
        "tiny_ingle.py": "def main():\n    print('tiny ingle')\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": "[console_scripts]\ningle = tiny_ingle:main\n",
    }
    record_lines = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record_lines.append(f"{path},sha256={digest},{len(text.encode())}")
    record_lines.append(f"{dist_info}/RECORD,,")
    wheel = wheelhouse / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record_lines) + "\n")
    return wheel


def test_offline_install_from_a_wheelhouse_creates_the_venv(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    _tiny_ingle_wheel(wheelhouse)
    root = tmp_path / "root"
    # No network: --find-links implies --no-index, so pip may only look in the wheelhouse.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1"}

    result = run_install("--root", str(root), "--find-links", str(wheelhouse), "--python", sys.executable, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    ingle = root / "opt/ingle/venv/bin/ingle"
    assert subprocess.run([str(ingle)], capture_output=True, text=True, timeout=60).stdout == "tiny ingle\n"
    before = tree_digest(root / "etc")
    again = run_install("--root", str(root), "--find-links", str(wheelhouse), "--python", sys.executable, env=env)
    assert again.returncode == 0, again.stderr
    assert tree_digest(root / "etc") == before


def test_the_example_config_parses_into_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGLE_CONFIG", str(REPO / "deploy/ingle.toml.example"))
    settings = Settings()
    assert settings.home == Path("/var/lib/ingle")
    assert settings.host == "127.0.0.1"
    assert settings.api_key is None
