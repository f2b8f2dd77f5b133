"""PNG plots with matplotlib, an optional extra: without it the bench says so and goes on."""

from __future__ import annotations

import sys
from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        print("matplotlib is not installed (pip install 'mercury-lsp[plot]'): skipping plots", file=sys.stderr)
        return None


def frontier(result: dict, out: Path, kind: str = "all") -> Path | None:
    """Exact match against ms per completion and against tokens per forward, one point per setting."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in result["settings"]:
        m = s["summary"].get(kind)
        if not m:
            continue
        style = (dict(marker="s", color="tab:red") if s["decoder"] == "autoregressive"
                 else dict(marker="o", color="tab:blue" if s.get("copy_prior", True) else "tab:gray"))
        left.scatter(m["ms_mean"], m["exact"], **style)
        left.annotate(s["label"], (m["ms_mean"], m["exact"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if s["decoder"] == "diffusion":
            right.scatter(m["tokens_per_forward"], m["exact"], **style)
            right.annotate(s["label"], (m["tokens_per_forward"], m["exact"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    left.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    left.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    left.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    left.set_xlabel("ms per completion (log)")
    right.set_xlabel("tokens per forward")
    for ax in (left, right):
        ax.set_ylabel(f"exact match % ({kind})")
        ax.grid(alpha=0.3)
    has_ar = any(s["decoder"] == "autoregressive" for s in result["settings"])
    ablated = any(not s.get("copy_prior", True) for s in result["settings"] if s["decoder"] == "diffusion")
    fig.suptitle("diffusion threshold frontier (blue)" + (", without the copy prior (gray)" if ablated else "")
                 + (" vs autoregressive baseline (red)" if has_ar else ""))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def latency_histogram(latencies_ms: list[float], budget_ms: float, out: Path) -> Path | None:
    plt = _pyplot()
    if plt is None or not latencies_ms:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(latencies_ms, bins=min(60, max(10, len(latencies_ms) // 5)), color="tab:blue", alpha=0.8)
    ax.axvline(budget_ms, color="tab:red", linestyle="--", label=f"budget {budget_ms:g} ms")
    ax.set_xlabel("keystroke to suggestion (ms)")
    ax.set_ylabel("requests")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def throughput_curve(rows: list[dict], out: Path) -> Path | None:
    plt = _pyplot()
    if plt is None or not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    clients = [r["clients"] for r in rows]
    for ax, key, name in zip(axes, ("tokens_per_s", "requests_per_s"), ("tokens/s", "requests/s")):
        ax.plot(clients, [r[key] for r in rows], marker="o")
        ax.set_xticks(clients)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(name)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle("engine throughput (closed-loop clients, dynamic batching)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
