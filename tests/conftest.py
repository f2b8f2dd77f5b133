"""Shared fixtures: a tiny random-weight model folder and real `mercury-engine serve` processes.

`tiny_model_dir` (session): a Qwen2-layout folder with random weights and a byte-level BPE
tokenizer trained in a second on a few stdlib files; special tokens <|mask|> <|eom|> <|pad|> are
ids 0, 1, 2 as engine/tokenizer.py expects. It makes engine tests fast; its completions are noise.

`engine` (session): the socket path of a ready engine serving that model on the CPU.
`start_engine` (function): starts extra engines with their own flags (idle timeout, shutdown...);
every engine a test starts is stopped at the end of that test. Engines that a language server
under test spawned detached (they idle 30 minutes by design) are stopped when the session ends.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

ENGINE_START_TIMEOUT = 120.0  # generous: the machine is shared and torch takes seconds to import
# Inherited by every process the tests start, so the session can find the engines it left behind.
SESSION_MARK = f"MERCURY_TEST_SESSION={os.getpid()}"
os.environ["MERCURY_TEST_SESSION"] = str(os.getpid())


@pytest.fixture(scope="session", autouse=True)
def stop_leftover_engines():
    yield
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return
    for entry in proc_root.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours
        if SESSION_MARK.encode() in env and b"serve" in argv and any(b"engine" in a for a in argv):
            try:
                os.kill(int(entry.name), signal.SIGTERM)
            except OSError:
                pass


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from mercury_engine.config import ModelConfig
    from mercury_engine.loader import save_model
    from mercury_engine.model import Transformer
    from mercury_engine.tokenizer import SPECIAL_TOKENS

    out = tmp_path_factory.mktemp("tiny_model")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text(encoding="utf-8") for name in ("textwrap.py", "string.py", "bisect.py", "heapq.py")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    tok.save(str(out / "tokenizer.json"))

    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        mask_token_id=0,
        eom_token_id=1,
        pad_token_id=2,
    )
    model = Transformer(cfg)
    # Larger random weights give varied noise; at the usual init scale a random model writes one
    # token over and over, which the language server rightly drops as a loop.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5)
    save_model(model, out / "tokenizer.json", out)
    return out


class EngineProcess:
    """A `mercury-engine serve` subprocess on its own socket; stderr goes to a log file."""

    def __init__(self, model_dir: Path, socket_path: Path, *extra: str, nofile: int | None = None):
        self.socket_path = socket_path
        # not beside the socket: tests check that the engine creates the socket's folder itself
        fd, log_path = tempfile.mkstemp(prefix="mercury-engine-", suffix=".log")
        self.log_path = Path(log_path)
        self.log = os.fdopen(fd, "wb")
        cmd = [sys.executable, "-m", "mercury_engine.cli", "serve", "--model", str(model_dir), "--device", "cpu", "--socket", str(socket_path), *extra]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        limit = None if nofile is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=limit)

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = ENGINE_START_TIMEOUT) -> "EngineProcess":
        from mercury_engine.client import EngineUnavailable, call

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                if call("health", socket_path=self.socket_path, timeout=5)["ready"]:
                    return self
            except (EngineUnavailable, EOFError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"engine not ready after {timeout} s:\n{self.stderr()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def engine(tiny_model_dir, tmp_path_factory):
    """Socket path of a ready engine on the tiny model, shared by the whole session."""
    proc = EngineProcess(tiny_model_dir, tmp_path_factory.mktemp("engine") / "engine.sock").wait_ready()
    yield proc.socket_path
    proc.stop()


@pytest.fixture
def start_engine(tiny_model_dir, tmp_path_factory):
    """start_engine(*flags, ready=True, model_dir=None, socket_path=None, nofile=None) -> EngineProcess
    (nofile: the engine's file-descriptor limit);
    stopped when the test ends."""
    started: list[EngineProcess] = []

    def start(*extra: str, ready: bool = True, model_dir: Path | None = None, socket_path: Path | None = None,
              nofile: int | None = None) -> EngineProcess:
        sock = socket_path or tmp_path_factory.mktemp("eng") / "engine.sock"
        proc = EngineProcess(model_dir or tiny_model_dir, sock, *extra, nofile=nofile)
        started.append(proc)
        return proc.wait_ready() if ready else proc

    yield start
    for proc in started:
        proc.stop()
