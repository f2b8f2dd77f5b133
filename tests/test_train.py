"""The trainer: its batches put loss where the objective says, and `mercury-engine train` runs end
to end on a small corpus (budget, held-out evaluation, export, resume) into a model the engine loads."""

import json
import math
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from mercury_engine.config import ModelConfig
from mercury_engine.corpus import collect, read_texts, tokenize_split
from mercury_engine.model import Transformer, math_attention
from mercury_engine.tokenizer import Tokenizer, train_tokenizer
from mercury_engine.train import batch_loss, causal_batch, diffusion_batch, lm_batch

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TRAIN_FILES = ["textwrap.py", "string.py", "bisect.py", "heapq.py", "fnmatch.py", "shlex.py", "glob.py"]
HELDOUT_FILES = ["colorsys.py", "keyword.py"]


def test_diffusion_batch_has_logits_only_at_masked_slots():
    rng = np.random.default_rng(0)
    examples = [([10, 11, 12], [20, 21], [30], ""), ([13], [22, 23, 24, 25], [31, 32], "")]
    K = 6
    b = diffusion_batch(examples, K, rng, pad=2, mask=0, eom=1)
    flat = b["ids"].flatten()
    assert (flat[b["out_idx"]] == 0).all()  # every loss position holds a mask token
    P = 3
    for row, (_, mid, _, _) in enumerate(examples):
        slots = mid + [1] * (K - len(mid))  # the middle, then end-of-middle to the canvas end
        sel = b["out_idx"] // b["ids"].shape[1] == row
        cols = (b["out_idx"][sel] % b["ids"].shape[1]) - P
        assert b["target"][sel].tolist() == [slots[c] for c in cols.tolist()]
        assert sel.any()  # at least one slot per row carries loss
    assert b["norm"] == len(examples) * K
    assert (b["weight"] >= 1.0).all()  # 1/t with t <= 1


def test_lm_batches_predict_the_hidden_or_the_next_token():
    rng = np.random.default_rng(1)
    windows = np.arange(40, dtype=np.uint16).reshape(4, 10) + 10
    b = lm_batch(windows, rng, mask=0, causal=False)
    assert (b["ids"].flatten()[b["out_idx"]] == 0).all()
    assert (torch.from_numpy(windows.astype(np.int64)).flatten()[b["out_idx"]] == b["target"]).all()
    c = lm_batch(windows, rng, mask=0, causal=True)
    assert (c["target"] == c["ids"].flatten()[c["out_idx"] + 1]).all()
    assert len(c["target"]) == 4 * 9


def test_causal_batch_loss_covers_the_middle_and_its_end():
    b = causal_batch([([10, 11], [20, 21, 22], [30], "")], eom=1, pad=2)
    assert b["target"].tolist() == [20, 21, 22, 1]


def test_batch_loss_is_the_weighted_masked_cross_entropy():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    model = Transformer(cfg)
    b = diffusion_batch([([5, 6], [7, 8], [9], "")], 4, np.random.default_rng(2), 2, 0, 1, t=np.array([0.5]))
    loss, ce_sum, n = batch_loss(model, b, "cpu")
    assert n == len(b["target"])
    assert math.isclose(loss.item(), 2.0 * ce_sum / 4, rel_tol=1e-5)  # weight 1/t = 2, over K = 4 slots


def test_compiled_training_step_matches_eager():
    # `train --compile` takes its loss from torch.compile(model, dynamic=True): canvases of
    # different lengths and plain windows must give the eager model's loss and gradients
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1)
    model = Transformer(cfg)
    compiled = torch.compile(model, dynamic=True)
    rng = np.random.default_rng(0)
    examples = [([5, 6, 7], [8, 9], [10, 11], ""), ([12], [13, 14, 15], [16, 17, 18], "")]
    batches = [diffusion_batch(examples, K, rng, 2, 0, 1) for K in (4, 8)]
    batches.append(lm_batch(rng.integers(3, 64, size=(2, 12)), rng, 0, False))
    for b in batches:
        results = []
        for m in (model, compiled):
            loss, _, _ = batch_loss(m, b, "cpu")
            loss.backward()
            results.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
            model.zero_grad(set_to_none=True)
        (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
        assert math.isclose(eager_loss, compiled_loss, rel_tol=1e-4)
        for e, c in zip(eager_grads, compiled_grads):
            torch.testing.assert_close(c, e, atol=1e-5, rtol=1e-3)


def test_bf16_math_attention_matches_sdpa():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 16) for _ in range(3))
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., :3] = False
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = math_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask).float()
    assert (got - want).abs().max() < 0.05


@pytest.fixture(scope="module")
def small_data_dir(tmp_path_factory) -> Path:
    """A prepared corpus of a few stdlib files, laid out as `prepare` writes it."""
    data = tmp_path_factory.mktemp("data")
    manifest = collect([("stdlib", STDLIB)], [])
    keep = {"train": TRAIN_FILES, "heldout": HELDOUT_FILES}
    everything = manifest["files"]["train"] + manifest["files"]["heldout"]
    manifest["files"] = {split: [e for e in everything if e["rel"] in names] for split, names in keep.items()}
    assert [len(v) for v in manifest["files"].values()] == [len(TRAIN_FILES), len(HELDOUT_FILES)]
    manifest["counts"] = {k: len(v) for k, v in manifest["files"].items()}
    manifest["packages"] = False
    train_tokenizer(read_texts(manifest["files"]["train"]), 512, data / "tokenizer.json")
    tok = Tokenizer(data / "tokenizer.json", 0, 1, 2)
    manifest["tokens"] = {s: tokenize_split(tok, manifest["files"][s], data / f"{s}.bin") for s in ("train", "heldout")}
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data


def test_save_model_in_bf16_halves_the_weights_and_loads_back(tmp_path):
    from mercury_engine.loader import load_model, save_model
    from mercury_engine.train import make_config

    train_tokenizer(read_texts([{"path": str(STDLIB / "textwrap.py")}]), 300, tmp_path / "tokenizer.json")
    model = Transformer(make_config("tiny", 300, causal=False))
    save_model(model, tmp_path / "tokenizer.json", tmp_path / "fp32")
    save_model(model, tmp_path / "tokenizer.json", tmp_path / "bf16", dtype=torch.bfloat16)
    sizes = [(tmp_path / d / "model.safetensors").stat().st_size for d in ("fp32", "bf16")]
    assert sizes[1] < 0.6 * sizes[0]
    loaded = load_model(tmp_path / "bf16", device="cpu", dtype=torch.float32)
    want = model.model.embed_tokens.weight.bfloat16().float()
    assert torch.equal(loaded.model.model.embed_tokens.weight, want)


def run_train(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mercury_engine.cli", "train", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_exports_resumes_and_the_engine_loads_it(small_data_dir, tmp_path):
    from mercury_engine.loader import load_model
    from mercury_engine.sampler import InfillParams, Sampler

    out = tmp_path / "run"
    common = ["--out", str(out), "--data-dir", str(small_data_dir), "--size", "tiny", "--batch", "8",
              "--threads", "1", "--eval-every", "4", "--eval-examples", "24", "--warmup", "2", "--lr", "3e-3"]
    first = run_train(*common, "--tokens", "25000")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "tok/s" in first.stderr and "held-out loss" in first.stderr
    state = torch.load(out / "checkpoint.pt", weights_only=False)["state"]
    assert state["tokens"] >= 25000
    card = json.loads((out / "model" / "training_card.json").read_text())  # the best evaluation's model
    assert 0 < card["tokens_seen"] <= state["tokens"]
    assert card["heldout_loss"] == min(h["heldout_loss"] for h in state["history"])
    assert card["data"]["files"] == {"train": len(TRAIN_FILES), "heldout": len(HELDOUT_FILES)}
    assert card["weights_dtype"] == "float32"  # a tiny model is far under the shipped-size cap
    for key in ("parameters", "device", "precision", "train_minutes", "heldout_loss", "command"):
        assert key in card
    history = state["history"]
    assert history[-1]["heldout_loss"] < history[0]["heldout_loss"] < math.log(512) + 1  # it learns

    second = run_train(*common, "--tokens", "50000", "--resume")
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resumed at step {state['step']}" in second.stderr
    resumed = torch.load(out / "checkpoint.pt", weights_only=False)["state"]
    assert resumed["tokens"] >= 50000 and resumed["step"] > state["step"]
    assert [h["step"] for h in resumed["history"]][: len(history)] == [h["step"] for h in history]

    # --init: a new run starts from the exported model (weights, tokenizer), not from scratch
    adapted = tmp_path / "adapted"
    init_from = json.loads((out / "model" / "training_card.json").read_text())
    third = run_train("--out", str(adapted), "--data-dir", str(small_data_dir), "--init", str(out / "model"), "--batch", "8",
                      "--threads", "1", "--eval-every", "1", "--eval-examples", "24", "--warmup", "100", "--tokens", "2000")
    assert third.returncode == 0, third.stderr[-2000:]
    started = torch.load(adapted / "checkpoint.pt", weights_only=False)["state"]
    assert started["step"] < state["step"]  # a fresh schedule
    # evaluated before its first step: exactly where the model left off, far below a fresh model
    assert started["history"][0]["step"] == 0 and "before training" in third.stderr
    assert started["history"][0]["heldout_loss"] == pytest.approx(init_from["heldout_loss"], abs=1e-3)
    assert started["history"][1]["heldout_loss"] < history[0]["heldout_loss"] - 0.5
    init_card = json.loads((adapted / "model" / "training_card.json").read_text())["init"]
    assert init_card["model"] == str((out / "model").resolve()) and init_card["tokens_seen"] == init_from["tokens_seen"]
    other = tmp_path / "other-data"  # a corpus tokenized by another tokenizer cannot train this model
    other.mkdir()
    (other / "tokenizer.json").write_bytes((Path(__file__).parents[1] / "engine/default_model/tokenizer.json").read_bytes())
    refused = run_train("--out", str(tmp_path / "refused"), "--data-dir", str(other), "--tokens", "1000",
                        "--init", str(out / "model"))
    assert refused.returncode == 2 and "another tokenizer" in refused.stderr

    loaded = load_model(out / "model", device="cpu")
    result = Sampler(loaded).infill(InfillParams(prefix="def f(x):\n    return ", suffix="\n", max_tokens=8,
                                                 budget_ms=5000))
    assert isinstance(result.completions[0].text, str)


def test_training_cuts_whole_bodies_from_column_0_and_held_out_cuts_stay_as_they_were():
    from mercury_engine.infill_data import cut_example

    text = "".join(f"def f{i}(x):\n    y = x + {i}\n    return y\n\n" for i in range(40))
    def cuts(whole_lines):
        rng = np.random.default_rng(0)
        return [c for c in (cut_example(text, rng, "lines", whole_lines) for _ in range(300)) if c]
    for c in cuts(False):  # from the line's text, as before
        assert not c.middle.startswith(" ")
    col0 = [c for c in cuts(True) if c.prefix.endswith("\n") and c.middle.startswith("    ")]
    newline = [c for c in cuts(True) if c.middle.endswith("\n")]
    assert len(col0) > 50
    assert len(newline) > 1.5 * sum(c.middle.endswith("\n") for c in cuts(False))
    assert max(c.middle.count("\n") for c in cuts(True)) > 8
