"""`mercury-engine train`: masked-diffusion infilling (or the causal baseline) on a CPU or a GPU.

Half of the steps (--lm-fraction) are plain language modelling of token windows (MDLM masking
for diffusion, next-token for causal), where every position carries loss; the rest are infilling.

Diffusion objective (MDLM-style): canvas = prefix + K slots + suffix, where the slots hold the
middle followed by end-of-middle tokens; a mask ratio t is drawn per example, each slot is masked
with probability t, and the cross-entropy at masked slots is weighted by 1/t. Logits are computed
only at the slots. Causal mode trains the same architecture on suffix-prefix-middle sequences.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import ModelConfig
from .corpus import prepare, read_texts
from .infill_data import CANVAS_SIZES, ExampleSource
from .loader import bf16_is_fast, load_model, resolve_device, save_model
from .model import Transformer
from .paths import DEFAULT_MODEL_DIR
from .tokenizer import Tokenizer

SIZES = {  # name: (hidden, layers, heads, kv heads, mlp)
    "tiny": (128, 2, 4, 2, 384),
    "small": (256, 4, 8, 4, 768),
    "base": (384, 6, 6, 2, 1024),
}
FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = 3, 4, 5
MIN_T = 0.05
SHIPPED_MAX_BYTES = 28 << 20  # weights of the bundled model (with its 0.5 MB tokenizer, under 30 MB)


def make_config(size: str, vocab: int, causal: bool) -> ModelConfig:
    d, layers, heads, kv, ff = SIZES[size]
    return ModelConfig(
        vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=ff, max_position_embeddings=1024, causal=causal,
        mask_token_id=0, eom_token_id=1, pad_token_id=2,
    )


def diffusion_batch(examples, K: int, rng: np.random.Generator, pad: int, mask: int, eom: int, t=None):
    """Left-pad prefixes so the K slots share columns; returns tensors for one training step.
    Loss positions are flat indices into the (B * length) canvas: only masked slots get logits."""
    P = max(len(e[0]) for e in examples)
    S = max(len(e[2]) for e in examples)
    B, L = len(examples), P + K + S
    ids = np.full((B, L), pad, dtype=np.int64)
    valid = np.zeros((B, L), dtype=bool)
    target = np.full((B, K), eom, dtype=np.int64)
    for i, (pre, mid, suf, _) in enumerate(examples):
        ids[i, P - len(pre) : P] = pre
        target[i, : len(mid)] = mid
        ids[i, P + K : P + K + len(suf)] = suf
        valid[i, P - len(pre) : P + K + len(suf)] = True
    if t is None:
        t = rng.uniform(MIN_T, 1.0, size=B)
    masked = rng.random((B, K)) < t[:, None]
    masked[np.arange(B), rng.integers(0, K, size=B)] = True  # at least one slot per row
    ids[:, P : P + K] = np.where(masked, mask, target)
    positions = np.cumsum(valid, axis=1) - 1
    rows, cols = np.nonzero(masked)
    return {
        "ids": torch.from_numpy(ids), "valid": torch.from_numpy(valid),
        "positions": torch.from_numpy(np.maximum(positions, 0)),
        "out_idx": torch.from_numpy(rows * L + P + cols), "target": torch.from_numpy(target[rows, cols]),
        "weight": torch.from_numpy(1.0 / t[rows]).float(), "norm": B * K,
    }


def lm_batch(windows: np.ndarray, rng: np.random.Generator, mask: int, causal: bool):
    """Plain language modelling on token windows (B, L): every position can carry loss, which
    teaches the language much faster per token than infilling examples, whose context is loss-free.
    Diffusion: MDLM masking over the whole window; causal: next-token prediction."""
    B, L = windows.shape
    ids = windows.astype(np.int64)
    if causal:
        out_idx = (np.arange(B)[:, None] * L + np.arange(L - 1)).ravel()  # every position but the last
        return {
            "ids": torch.from_numpy(ids), "valid": None, "positions": None,
            "out_idx": torch.from_numpy(out_idx), "target": torch.from_numpy(ids[:, 1:].ravel()),
            "weight": torch.ones(len(out_idx)), "norm": len(out_idx),
        }
    t = rng.uniform(MIN_T, 1.0, size=B)
    masked = rng.random((B, L)) < t[:, None]
    masked[np.arange(B), rng.integers(0, L, size=B)] = True
    rows, cols = np.nonzero(masked)
    target = ids[rows, cols]
    ids = np.where(masked, mask, ids)
    return {
        "ids": torch.from_numpy(ids), "valid": None, "positions": None,
        "out_idx": torch.from_numpy(rows * L + cols), "target": torch.from_numpy(target),
        "weight": torch.from_numpy(1.0 / t[rows]).float(), "norm": B * L,
    }


def causal_batch(examples, eom: int, pad: int):
    """Suffix-prefix-middle order; loss on the middle and its end-of-middle token."""
    seqs, starts = [], []
    for pre, mid, suf, _ in examples:
        head = [FIM_SUFFIX] + suf + [FIM_PREFIX] + pre + [FIM_MIDDLE]
        starts.append(len(head) - 1)
        seqs.append(head + mid + [eom])
    B, L = len(seqs), max(len(s) for s in seqs)
    ids = np.full((B, L), pad, dtype=np.int64)
    out_idx, target = [], []
    for i, (s, st) in enumerate(zip(seqs, starts)):
        ids[i, : len(s)] = s
        out_idx.extend(range(i * L + st, i * L + len(s) - 1))
        target.extend(s[st + 1 :])
    return {
        "ids": torch.from_numpy(ids), "valid": None, "positions": None,
        "out_idx": torch.tensor(out_idx), "target": torch.tensor(target),
        "weight": torch.ones(len(target)), "norm": len(target),
    }


def batch_loss(model, batch, device):
    """(loss to minimise, summed cross-entropy, number of loss positions). Diffusion: the MDLM
    1/t-weighted masked cross-entropy averaged over all slots; causal: mean next-token loss."""
    b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    logits = model(b["ids"], positions=b["positions"], key_valid=b["valid"], out_idx=b["out_idx"])
    ce = F.cross_entropy(logits.float(), b["target"], reduction="none")
    loss = (ce * b["weight"]).sum() / b["norm"]
    return loss, ce.sum().item(), ce.numel()


def heldout_examples(texts, tok, n: int, seed: int = 1234):
    src = ExampleSource(texts, tok, seed=seed)
    rng = np.random.default_rng(seed)
    groups = []
    for K in (16, 32, 64):
        ex = src.draw(n // 3, K)
        t = np.linspace(MIN_T, 1.0, len(ex))
        groups.append((K, ex, t, int(rng.integers(1 << 30))))
    return groups


@torch.no_grad()
def evaluate(model, groups, device, causal: bool, mask: int, eom: int, pad: int) -> float:
    """Mean cross-entropy per predicted token on fixed held-out examples (deterministic masks)."""
    model.eval()
    total, count = 0.0, 0.0
    for K, ex, t, seed in groups:
        for i in range(0, len(ex), 32):
            chunk = ex[i : i + 32]
            if causal:
                batch = causal_batch(chunk, eom, pad)
            else:
                batch = diffusion_batch(chunk, K, np.random.default_rng(seed + i), pad, mask, eom, t=t[i : i + 32])
            _, s, c = batch_loss(model, batch, device)
            total, count = total + s, count + c
    model.train()
    return total / max(count, 1)


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning it to the OS: every training step frees
    and reallocates the same ~100 MB blocks of logits and activations, and getting them back from
    the kernel page by page cost a third of each CPU step (1.33 s -> 0.92 s here). The cost is
    resident memory: up to 256 MB kept free, and a heap that fragments (untuned, a short run peaks
    at 3.6 GB, with these limits 4.4 GB; a 123-minute resumed run grew from 5.5 to 14.3 GB). That
    growth is freed heap, not a leak: malloc_trim(0) called into a running trainer (gdb) took it
    from 8.1 to 2.9 GB, and the next minute of steps touched it back to 7.2 GB at half speed (the
    page faults this function is here to avoid), so the trainer does not trim."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD: blocks below it from the heap, not fresh mmaps
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep this much free at the heap top
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def lr_at(progress: float, step: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save_checkpoint(path: Path, model, opt, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mercury-engine train", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run folder: checkpoint, logs and the exported model")
    ap.add_argument("--data-dir", default="runs/data", help="prepared corpus (built on first use)")
    ap.add_argument("--data", nargs="*", default=[], help="extra source folders (your own repositories)")
    ap.add_argument("--packages", action="store_true",
                    help="also train on the permissively licensed Python packages installed here (about 6x the standard library)")
    ap.add_argument("--no-stdlib", action="store_true",
                    help="train on the --data folders alone (with --init: adapt a model to your own code)")
    ap.add_argument("--mode", choices=("diffusion", "causal"), default="diffusion")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                    help="matmuls under bf16 autocast (auto: on GPUs and on CPUs with bf16 instructions)")
    ap.add_argument("--minutes", type=float, default=0, help="time budget (wall clock, across resumes)")
    ap.add_argument("--tokens", type=float, default=0, help="token budget (canvas tokens seen)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lm-fraction", type=float, default=0.5,
                    help="share of steps spent on plain language modelling of token windows")
    ap.add_argument("--lm-window", type=int, default=176)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-examples", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init", metavar="MODEL_DIR",
                    help="start from a trained model folder (its architecture, weights and tokenizer; 'bundled': the "
                         "model this package ships), to train it further or adapt it to --data; a fresh optimizer and schedule")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the training forward and backward (minutes of compiling at the start, "
                         "then faster steps; evaluation stays eager)")
    args = ap.parse_args(argv)
    if not args.minutes and not args.tokens:
        ap.error("give a budget: --minutes or --tokens")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    causal = args.mode == "causal"
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    tok_path = Path(args.data_dir) / "tokenizer.json"
    init = None
    if args.init:
        init = load_model(DEFAULT_MODEL_DIR if args.init == "bundled" else args.init, device="cpu", dtype=torch.float32)
        if init.config.causal != causal:
            ap.error(f"--init {args.init} is a {'causal' if init.config.causal else 'diffusion'} model; --mode {args.mode} asked")
        # the corpus must be tokenized with the model's own tokenizer: seed a new data dir with it
        init_tok = (init.path / "tokenizer.json").read_bytes()
        if not tok_path.exists():
            tok_path.parent.mkdir(parents=True, exist_ok=True)
            tok_path.write_bytes(init_tok)
        elif tok_path.read_bytes() != init_tok:
            ap.error(f"{args.data_dir} was tokenized with another tokenizer than --init {args.init}'s; give a new --data-dir")
    manifest = prepare(args.data_dir, args.data, args.vocab, packages=args.packages, stdlib=not args.no_stdlib)
    tok = Tokenizer(tok_path, 0, 1, 2)
    train_texts = list(read_texts(manifest["files"]["train"]))
    held_texts = list(read_texts(manifest["files"]["heldout"]))
    groups = heldout_examples(held_texts, tok, args.eval_examples)

    if init is not None:
        cfg, model = init.config, init.model.to(device).train()
        dims = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size)
        args.size = next((name for name, d in SIZES.items() if d == dims), "as --init")
    else:
        cfg = make_config(args.size, tok.vocab_size, causal)
        model = Transformer(cfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=device.type == "cuda")
    state = {"step": 0, "tokens": 0, "seconds": 0.0, "best": float("inf"), "history": []}
    ckpt = out / "checkpoint.pt"
    if init is not None:
        card = init.path / "training_card.json"
        prior = json.loads(card.read_text()) if card.exists() else {}
        state["init"] = {"model": str(init.path.resolve()), "tokens_seen": prior.get("tokens_seen"),
                         "heldout_loss": prior.get("heldout_loss"), "train_minutes": prior.get("train_minutes")}
    if args.resume and ckpt.exists():  # the checkpoint holds the --init weights trained further
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        print(f"resumed at step {state['step']}, {state['tokens'] / 1e6:.1f}M tokens", file=sys.stderr)
    src = ExampleSource(train_texts, tok, seed=args.seed + state["step"], whole_lines=True)
    rng = np.random.default_rng(args.seed + 7 * state["step"] + 1)
    sizes_p = np.array([1, 2, 2, 2, 1.5, 1.5, 1, 1], dtype=float)
    sizes_p /= sizes_p.sum()
    use_amp = args.precision == "bf16" or (args.precision == "auto" and bf16_is_fast(device))

    def budget_progress() -> float:
        parts = []
        if args.minutes:
            parts.append(state["seconds"] / (args.minutes * 60))
        if args.tokens:
            parts.append(state["tokens"] / args.tokens)
        return max(parts)

    # One graph with symbolic lengths serves every canvas size (dynamic=True); the eager `model`
    # shares its weights and does evaluation and export, so no-grad calls never trigger a compile.
    step_model = torch.compile(model, dynamic=True) if args.compile else model
    if init is not None and state["step"] == 0:
        # where the model starts on this corpus: adapting it to a repository shows as the drop
        held = evaluate(model, groups, device, causal, 0, 1, 2)
        state["history"].append({"step": 0, "tokens": 0, "heldout_loss": held, "train_loss": None, "minutes": 0.0})
        print(f"held-out loss {held:.4f} before training (--init {args.init})", file=sys.stderr, flush=True)
    model.train()
    t_last, tokens_last = time.perf_counter(), state["tokens"]
    started = time.perf_counter() - state["seconds"]
    loss_ema = None
    train_tokens = np.memmap(Path(args.data_dir) / "train.bin", dtype=np.uint16, mode="r")
    while budget_progress() < 1.0:
        if rng.random() < args.lm_fraction:
            starts = rng.integers(0, len(train_tokens) - args.lm_window, size=args.batch)
            windows = np.stack([train_tokens[s : s + args.lm_window] for s in starts])
            batch = lm_batch(windows, rng, 0, causal)
        else:
            K = int(rng.choice(CANVAS_SIZES, p=sizes_p))
            examples = src.draw(args.batch, 128 if causal else K)
            batch = causal_batch(examples, 1, 2) if causal else diffusion_batch(examples, K, rng, 2, 0, 1)
        for g in opt.param_groups:
            g["lr"] = lr_at(budget_progress(), state["step"], args.lr, args.warmup)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, _, _ = batch_loss(step_model, batch, device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        state["tokens"] += int(batch["ids"].numel())
        state["seconds"] = time.perf_counter() - started
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        if state["step"] % 10 == 0:
            now = time.perf_counter()
            tps = (state["tokens"] - tokens_last) / (now - t_last)
            t_last, tokens_last = now, state["tokens"]
            print(f"\rstep {state['step']} loss {loss_ema:.3f} tok/s {tps:,.0f} tokens {state['tokens'] / 1e6:.2f}M "
                  f"{state['seconds'] / 60:.1f} min {100 * budget_progress():.0f}%", end="", file=sys.stderr, flush=True)
        last = budget_progress() >= 1.0
        if state["step"] % args.eval_every == 0 or last:
            held = evaluate(model, groups, device, causal, 0, 1, 2)
            state["history"].append({"step": state["step"], "tokens": state["tokens"], "heldout_loss": held,
                                     "train_loss": loss_ema, "minutes": state["seconds"] / 60})
            print(f"\nheld-out loss {held:.4f} at step {state['step']}", file=sys.stderr, flush=True)
            if held < state["best"]:
                state["best"] = held
                export(model, tok_path, out / "model", args, manifest, state, device, use_amp)
            save_checkpoint(ckpt, model, opt, state)
    print(f"\ndone: {state['tokens'] / 1e6:.2f}M tokens, best held-out loss {state['best']:.4f}", file=sys.stderr)
    return 0


def export(model, tok_path, out_dir, args, manifest, state, device, use_amp: bool) -> None:
    card = {
        "objective": "causal (suffix-prefix-middle)" if model.config.causal else "masked diffusion infilling (MDLM 1/t weighting)",
        "parameters": model.num_parameters(),
        "non_embedding_parameters": model.num_parameters(exclude_embeddings=True),
        "size": args.size,
        "data": {"sources": manifest["sources"], "licences": manifest["licences"], "files": manifest["counts"],
                 "bytes": manifest["bytes"], "corpus_tokens": manifest["tokens"], "heldout_percent": manifest["heldout_percent"]},
        "tokens_seen": state["tokens"], "steps": state["step"], "batch": args.batch, "lr": args.lr,
        **({"init": state["init"]} if "init" in state else {}),  # the model this run started from
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "precision": "bf16 autocast" if use_amp else "fp32",
        "threads": torch.get_num_threads(), "train_minutes": round(state["seconds"] / 60, 2),
        "heldout_loss": state["best"], "history": state["history"][-20:],
        "command": "mercury-engine train " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["train"] else sys.argv[1:]),
    }
    # a model that could ship must fit the cap: larger ones (a GPU run's `base`) are saved in bf16
    dtype = torch.bfloat16 if 4 * model.num_parameters() > SHIPPED_MAX_BYTES else torch.float32
    card["weights_dtype"] = str(dtype).removeprefix("torch.")
    save_model(model, tok_path, out_dir, card, dtype=dtype)  # writes the card beside the weights
