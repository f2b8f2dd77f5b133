"""The VS Code extension in a real VS Code (code-server) driven by headless Chromium.

Opt-in: runs when MERCURY_E2E_VSCODE=1 and MERCURY_VSCODE_DIR holds code-server and
playwright-core (editors/vscode/e2e-setup.sh installs them). Builds editors/vscode, installs it
into a fresh extensions folder, points it at the real mercury-lsp and a real engine, types in a
Python file, and checks that the ghost text shown was inserted by Tab and saved to disk. Also
packages the .vsix and installs it through VS Code's command line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXTENSION_SRC = ROOT / "editors" / "vscode"
DRIVER = Path(__file__).resolve().parent / "e2e_vscode" / "ghost_text.js"
VSCODE_DIR = Path(os.environ.get("MERCURY_VSCODE_DIR", "/nonexistent"))
CODE_SERVER = VSCODE_DIR / "node_modules" / ".bin" / "code-server"
MERCURY_LSP = shutil.which("mercury-lsp", path=str(Path(sys.executable).parent)) or shutil.which("mercury-lsp")
MANIFEST = json.loads((EXTENSION_SRC / "package.json").read_text())
EXTENSION_ID = f"{MANIFEST['publisher']}.{MANIFEST['name']}"
TYPED_LINES = ["def perimeter(radius):", "return 2 * 'π' + "]  # VS Code indents the second line itself

pytestmark = [
    pytest.mark.skipif(os.environ.get("MERCURY_E2E_VSCODE") != "1", reason="set MERCURY_E2E_VSCODE=1 to run"),
    pytest.mark.skipif(not CODE_SERVER.exists(), reason="code-server not in $MERCURY_VSCODE_DIR (editors/vscode/e2e-setup.sh)"),
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian chromium not installed"),
    pytest.mark.timeout(600),
]


def npm(*args: str) -> None:
    """Runs npm in editors/vscode, installing its locked dependencies first if needed."""
    if not (EXTENSION_SRC / "node_modules").exists():
        run_npm("ci", "--no-audit", "--no-fund")
    run_npm(*args)


def run_npm(*args: str) -> None:
    run = subprocess.run(["npm", *args], cwd=EXTENSION_SRC, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert run.returncode == 0, f"npm {' '.join(args)} failed:\n{run.stdout}"


def build_extension(extensions_dir: Path) -> Path:
    """tsc + esbuild, then install the bundle as publisher.name-version/ (no .vsix needed)."""
    npm("run", "compile")
    target = extensions_dir / f"{EXTENSION_ID}-{MANIFEST['version']}"
    target.mkdir(parents=True)
    for name in ("package.json", "README.md", "LICENSE"):
        shutil.copy(EXTENSION_SRC / name, target / name)
    shutil.copytree(EXTENSION_SRC / "out", target / "out")
    return target


def isolated_env(home: Path) -> dict[str, str]:
    """Keeps code-server's and Chromium's files out of the real home folder."""
    for sub in ("tmp", "xdg"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    return dict(os.environ, HOME=str(home), TMPDIR=str(home / "tmp"), XDG_CONFIG_HOME=str(home / "xdg"),
                XDG_DATA_HOME=str(home / "xdg"), XDG_CACHE_HOME=str(home / "xdg"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"code-server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"code-server did not answer {url} within {timeout} s")


@pytest.fixture
def code_server(engine, tmp_path: Path):
    if MERCURY_LSP is None:
        pytest.fail("mercury-lsp is not installed in this environment")
    # A short folder: Chromium and code-server put Unix sockets in TMPDIR (108-byte path limit).
    home = Path(tempfile.mkdtemp(prefix="mercury-vsc-"))
    env = isolated_env(home)
    for sub in ("user-data/User", "extensions", "ws"):
        (home / sub).mkdir(parents=True)
    build_extension(home / "extensions")
    settings = {
        "mercury.serverPath": MERCURY_LSP,
        "mercury.engineSocket": str(engine),
        "mercury.budgetMs": 2000,  # the engine shares a slow CPU with the browser
        "mercury.maxTokens": 16,
        "mercury.minConfidence": 0,  # the tiny random model's noise must show
        "editor.inlineSuggest.enabled": True,
        "workbench.startupEditor": "none",
        "security.workspace.trust.enabled": False,
        "extensions.autoUpdate": False,
        "extensions.autoCheckUpdates": False,
        "telemetry.telemetryLevel": "off",
        "update.mode": "none",
    }
    (home / "user-data/User/settings.json").write_text(json.dumps(settings, indent=2))
    workspace = home / "ws"
    (workspace / "shapes.py").write_text("import math\n\n\ndef area(radius):\n    return math.pi * radius ** 2\n\n\n")

    port = free_port()
    log = open(tmp_path / "code-server.log", "wb")
    proc = subprocess.Popen(
        [str(CODE_SERVER), "--bind-addr", f"127.0.0.1:{port}", "--auth", "none", "--disable-telemetry",
         "--disable-update-check", "--disable-workspace-trust", "--user-data-dir", str(home / "user-data"),
         "--extensions-dir", str(home / "extensions"), str(workspace)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield {"url": f"http://127.0.0.1:{port}/?folder={workspace}", "workspace": workspace, "home": home, "env": env}
    finally:
        # code-server runs the extension host and mercury-lsp as children: stop its whole group.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def test_tab_inserts_the_ghost_text(code_server, tmp_path: Path):
    original = (code_server["workspace"] / "shapes.py").read_text()
    config = {
        "url": code_server["url"],
        "file": "shapes.py",
        "typeLines": TYPED_LINES,
        "profileDir": str(code_server["home"] / "chromium"),
        "resultPath": str(tmp_path / "result.json"),
        "screenshotDir": str(tmp_path),
        "timeoutMs": 180000,
    }
    (tmp_path / "driver.json").write_text(json.dumps(config))
    env = dict(code_server["env"], NODE_PATH=str(VSCODE_DIR / "node_modules"))
    run = subprocess.run(["node", str(DRIVER), str(tmp_path / "driver.json")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=480)
    result_path = tmp_path / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    assert run.returncode == 0 and result.get("ok"), f"driver failed (screenshots in {tmp_path}):\n{run.stdout}"

    ghost = result["ghost"]
    assert "".join(ghost).strip(), f"ghost text is blank: {ghost}"
    saved = (code_server["workspace"] / "shapes.py").read_text()
    # What was typed, then whatever ghost text was shown, now saved on disk.
    expected = original + "def perimeter(radius):\n    return 2 * 'π' + " + "\n".join(ghost)
    assert saved.rstrip("\n") == expected.rstrip("\n"), f"saved:\n{saved!r}\nghost: {ghost!r}"
    assert "Mercury" in result["status"]
    assert re.search(r"Mercury \d+ ms", result["latencyStatus"]), result["latencyStatus"]
    assert '"engine"' in result["stats"] and '"latency_ms"' in result["stats"]
    assert "off" in result["toggledStatus"]


def test_vsix_packages_and_installs():
    """`npm run package` (vsce 3.9.2) makes a .vsix that VS Code installs from the command line."""
    npm("run", "package")
    vsix = EXTENSION_SRC / f"{MANIFEST['name']}-{MANIFEST['version']}.vsix"
    home = Path(tempfile.mkdtemp(prefix="mercury-vsix-"))
    try:
        env = isolated_env(home)
        cli = [str(CODE_SERVER), "--extensions-dir", str(home / "ext"), "--user-data-dir", str(home / "ud")]
        install = subprocess.run([*cli, "--install-extension", str(vsix)], env=env, capture_output=True, text=True, timeout=120)
        assert install.returncode == 0, install.stdout + install.stderr
        listed = subprocess.run([*cli, "--list-extensions", "--show-versions"], env=env, capture_output=True, text=True, timeout=120)
        assert f"{EXTENSION_ID}@{MANIFEST['version']}" in listed.stdout.split()
        installed = home / "ext" / f"{EXTENSION_ID}-{MANIFEST['version']}"
        assert (installed / "out" / "extension.js").stat().st_size > 10_000  # the bundle, languageclient inside
        assert not (installed / "node_modules").exists() and not (installed / "src").exists()
    finally:
        vsix.unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)
