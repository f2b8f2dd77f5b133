"""`mercury-bench decode`: the quality/speed frontier of the diffusion sampler's confidence
threshold, against one token per step with the same model and against the autoregressive baseline."""

from __future__ import annotations

import sys

from .decoders import autoregressive_decoder, diffusion_decoder
from .quality import evaluate
from .quality import render as render_table
from .report import table

ONE_PER_STEP = 1.01  # above any confidence: the sampler commits exactly one token per step


def progress(name: str):
    def show(done: int, total: int) -> None:
        print(f"\r  {name}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    return show


def run_decode(tasks: list[dict], sampler, thresholds: list[float], ar_decoder=None, max_tokens: int | None = None,
               ablate_copy_prior: bool = False) -> dict:
    """`ablate_copy_prior`: every threshold once more with the sampler's context copy prior off
    (copying.py), in the same run, so the two can be compared as a ratio."""
    decoders = [diffusion_decoder(sampler, t) for t in thresholds]
    if ablate_copy_prior:
        decoders += [diffusion_decoder(sampler, t, copy_prior=False) for t in thresholds]
    if ar_decoder is not None:
        decoders.append(autoregressive_decoder(ar_decoder))
    settings = evaluate(tasks, decoders, run_tests=False, max_tokens=max_tokens, progress=progress)
    return {"settings": settings, "headline": headline(settings)}


def headline(settings: list[dict], kind: str = "all") -> dict:
    """The issue's goals: tokens per forward at <= 1 point exact-match loss against one token per
    step, and latency against the autoregressive baseline at equal quality (within 1 point)."""
    diffusion = [s for s in settings if s["decoder"] == "diffusion" and s.get("copy_prior", True)]
    one_step = next((s for s in diffusion if s["threshold"] > 1.0), None)
    ar = next((s for s in settings if s["decoder"] == "autoregressive"), None)
    out: dict = {}
    if one_step:
        ref = one_step["summary"][kind]["exact"]
        close = [s for s in diffusion if s["summary"][kind]["exact"] >= ref - 1.0]
        best = max(close, key=lambda s: s["summary"][kind]["tokens_per_forward"] or 0)
        out["one_token_per_step_exact"] = ref
        out["best_within_1pt"] = {"label": best["label"], "exact": best["summary"][kind]["exact"],
                                  "tokens_per_forward": best["summary"][kind]["tokens_per_forward"],
                                  "ms_mean": best["summary"][kind]["ms_mean"]}
    if ar and diffusion:
        ar_exact, ar_ms = ar["summary"][kind]["exact"], ar["summary"][kind]["ms_mean"]
        equal = [s for s in diffusion if s["summary"][kind]["exact"] >= ar_exact - 1.0]
        pick = min(equal, key=lambda s: s["summary"][kind]["ms_mean"]) if equal else max(diffusion, key=lambda s: s["summary"][kind]["exact"])
        out["vs_autoregressive"] = {
            "autoregressive_exact": ar_exact, "autoregressive_ms_mean": ar_ms,
            "diffusion_label": pick["label"], "diffusion_exact": pick["summary"][kind]["exact"],
            "diffusion_ms_mean": pick["summary"][kind]["ms_mean"],
            "speedup": ar_ms / pick["summary"][kind]["ms_mean"] if pick["summary"][kind]["ms_mean"] else None,
            "equal_quality": bool(equal),
        }
    return out


def render(result: dict) -> str:
    text = render_table(result["settings"])
    first = result["settings"][0]
    gate_rows = [[g["min_confidence"], f"{g['shown']}/{g['shown'] + g['hidden']}", g["exact_shown"], g["edit_sim_shown"],
                  g["exact_hidden"], g["edit_sim_hidden"]] for g in first.get("confidence_gate", [])]
    if gate_rows:
        text += f"\n\nhiding completions below a confidence ({first['label']}; the language server's minConfidence):\n"
        text += table(["min confidence", "shown", "exact % shown", "edit sim shown", "exact hidden", "edit sim hidden"], gate_rows)
    h = result["headline"]
    if "best_within_1pt" in h:
        b = h["best_within_1pt"]
        text += (f"\n\nwithin 1 point of one token/step ({h['one_token_per_step_exact']:.1f}% exact): {b['label']} "
                 f"at {b['tokens_per_forward']:.2f} tokens/forward, {b['exact']:.1f}% exact")
    if "vs_autoregressive" in h:
        v = h["vs_autoregressive"]
        how = "at equal quality (within 1 point)" if v["equal_quality"] else "NOT at equal quality (best diffusion setting)"
        text += (f"\nvs autoregressive ({v['autoregressive_exact']:.1f}% exact, {v['autoregressive_ms_mean']:.1f} ms): "
                 f"{v['diffusion_label']} {v['diffusion_exact']:.1f}% exact, {v['diffusion_ms_mean']:.1f} ms -> "
                 f"{v['speedup']:.2f}x {how}")
    return text
