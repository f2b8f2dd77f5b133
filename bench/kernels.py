"""`mercury-bench kernels`: each CUDA kernel against its torch equivalent, and a sampler-step-like
loop (confidence + commit + the one read-back per step) with and without the kernels.

GPU timings use CUDA events over many launches; CPU timings the median of wall-clock samples.
Without a GPU (or CuPy) only the torch references run, on the CPU, and the table says the GPU
figures are missing. The sampler's real step also runs the model; this isolates what the
kernels replace.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from mercury_engine import kernels as K

from .report import save_json, table

THRESHOLD = 0.9
STEPS = 8  # the loop's last step commits everything left, as a spent latency budget does


def time_ms(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / repeats
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def peaked_logits(shape, device, dtype, seed: int) -> torch.Tensor:
    """Random logits whose rows range from flat to confident, so commits vary per step."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape, device=device, generator=g)
    x[..., 0] += torch.rand(shape[:-1], device=device, generator=g) * 24
    return x.to(dtype)


def bench_confidence(backends, device, dtype, rows, vocab, repeats):
    logits = peaked_logits((rows, vocab), device, dtype, seed=rows + vocab)
    return {name: time_ms(lambda b=b: b.confidence(logits), device, repeats) for name, b in backends.items()}


def bench_commit(backends, device, batch, positions, repeats):
    g = torch.Generator().manual_seed(positions)
    prob0 = torch.rand(batch, positions, generator=g).to(device)
    token = torch.randint(3, 1000, (batch, positions), generator=g).to(device)
    canvas0 = torch.zeros(batch, positions, dtype=torch.long, device=device)
    mask0 = torch.ones(batch, positions, dtype=torch.bool, device=device)
    canvas, mask = canvas0.clone(), mask0.clone()

    def reset():
        canvas.copy_(canvas0)
        mask.copy_(mask0)

    base = time_ms(reset, device, repeats)  # subtracted: the state reset both variants need
    times = {}
    for name, b in backends.items():
        def run(b=b):
            reset()
            b.commit(canvas, mask, token, prob0, THRESHOLD, 1, None, False)
        times[name] = max(0.0, time_ms(run, device, repeats) - base)
    return times


def bench_add_rmsnorm(backends, device, dtype, rows, dim, repeats):
    g = torch.Generator().manual_seed(dim)
    x, residual = (torch.randn(rows, dim, generator=g).to(device, dtype) for _ in range(2))
    weight = torch.randn(dim, generator=g).to(device, dtype)
    return {name: time_ms(lambda b=b: b.add_rmsnorm(x, residual, weight, 1e-6), device, repeats)
            for name, b in backends.items()}


def bench_rope(backends, device, dtype, batch, heads_q, heads_k, length, head_dim, repeats):
    from mercury_engine.model import rope_tables

    g = torch.Generator().manual_seed(length)
    q = torch.randn(batch, length, heads_q, head_dim, generator=g).to(device, dtype).transpose(1, 2)
    k = torch.randn(batch, length, heads_k, head_dim, generator=g).to(device, dtype).transpose(1, 2)
    cos, sin = rope_tables(torch.arange(length, device=device).expand(batch, length), head_dim, 10000.0, dtype)
    return {name: time_ms(lambda b=b: b.rope_qk(q, k, cos, sin), device, repeats) for name, b in backends.items()}


def step_loop(backend, logits, canvas, mask) -> int:
    """Decode one canvas like the sampler: confidence, commit, read back masks left; until done."""
    canvas.zero_()
    mask.fill_(True)
    for step in range(STEPS):
        token, prob = backend.confidence(logits)
        left = backend.commit(canvas, mask, token, prob, THRESHOLD, 1, None, step == STEPS - 1)
        if max(left.tolist()) == 0:  # the one small read-back per step
            return step + 1
    return STEPS


def bench_step_loop(backends, device, dtype, batch, positions, vocab, repeats):
    logits = peaked_logits((batch, positions, vocab), device, dtype, seed=vocab)
    times, canvases, steps = {}, {}, 0
    for name, b in backends.items():
        canvas = torch.zeros(batch, positions, dtype=torch.long, device=device)
        mask = torch.ones(batch, positions, dtype=torch.bool, device=device)
        steps = step_loop(b, logits, canvas, mask)
        canvases[name] = canvas.cpu()
        # Per step: the loop syncs every step, so wall-clock and events agree; events for GPUs.
        times[name] = time_ms(lambda b=b: step_loop(b, logits, canvas, mask), device, repeats) / steps
    first = next(iter(canvases.values()))
    agree = all(torch.equal(first, c) for c in canvases.values())
    return times, steps, agree


def cases(on_gpu: bool, quick: bool):
    """(label, shape text, runner(backends, device, dtype, repeats) -> times) per dtype."""
    if quick:
        vocabs, conf_rows, dims = [1000], [8], [256]
        loop = [(2, 8, 1000)]
    elif on_gpu:
        vocabs, conf_rows, dims = [8192, 152064], [32, 256], [256, 896]
        loop = [(1, 32, 8192), (8, 32, 8192), (1, 32, 152064), (8, 32, 152064)]
    else:
        vocabs, conf_rows, dims = [8192], [32, 256], [256, 896]
        loop = [(1, 32, 8192), (8, 32, 8192)]
    out = []
    for v in vocabs:
        for r in conf_rows:
            out.append(("confidence", f"{r}x{v}", lambda bk, d, dt, n, r=r, v=v: bench_confidence(bk, d, dt, r, v, n)))
    for b, m in ([(1, 8)] if quick else [(1, 32), (8, 32), (8, 256)]):
        out.append(("commit", f"{b}x{m}", lambda bk, d, dt, n, b=b, m=m: bench_commit(bk, d, b, m, n)))
    for dim in dims:
        rows = 8 if quick else 32
        out.append(("add_rmsnorm", f"{rows}x{dim}", lambda bk, d, dt, n, dim=dim, rows=rows: bench_add_rmsnorm(bk, d, dt, rows, dim, n)))
    rope = (1, 4, 2, 8, 32) if quick else (1, 14, 2, 64, 64)
    out.append(("rope_qk", "B{}xHq{}xHk{}xL{}xD{}".format(*rope), lambda bk, d, dt, n: bench_rope(bk, d, dt, *rope, n)))
    for b, m, v in loop:
        out.append(("step loop", f"{b}x{m}x{v}", lambda bk, d, dt, n, b=b, m=m, v=v: bench_step_loop(bk, d, dt, b, m, v, n)))
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}" if value < 1 else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mercury-bench kernels", description="Each CUDA kernel against its torch equivalent, and a sampler-step-like loop (confidence + commit) with and without the kernels.")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=None, help="timed launches per figure (default 200 on GPU, 20 on CPU)")
    p.add_argument("--quick", action="store_true", help="tiny shapes and few repeats (a smoke run)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        kernel_backend = K.get_backend(args.device)
    except K.KernelsUnavailable as e:
        print(f"mercury-bench kernels: {e}", file=sys.stderr)
        return 2
    missing = None
    if kernel_backend.name == "cuda":
        device = kernel_backend.device
        backends = {"torch": K.TorchBackend(), "kernel": kernel_backend}
        dtypes = [torch.float32, torch.bfloat16]
    else:
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu")
        backends = {"torch": K.TorchBackend()}
        dtypes = [torch.float32]
        try:
            K.CudaBackend()
        except K.KernelsUnavailable as e:
            missing = str(e)
        missing = f"GPU figures missing: {missing or 'kernels not selected (--device cpu)'}"
    repeats = args.repeats or (3 if args.quick else 200 if device.type == "cuda" else 20)

    results, rows = [], []
    for dtype in dtypes:
        for op, shape, run in cases(device.type == "cuda", args.quick):
            if op == "commit" and dtype != dtypes[0]:
                continue  # token ids and flags: the logits dtype plays no part
            extra = {}
            outcome = run(backends, device, dtype, repeats)
            if op == "step loop":
                times, extra["steps"], extra["same_tokens"] = outcome
            else:
                times = outcome
            dt = "int64" if op == "commit" else str(dtype).removeprefix("torch.")
            kernel_ms = times.get("kernel")
            speedup = times["torch"] / kernel_ms if kernel_ms else None
            results.append({"op": op, "shape": shape, "dtype": dt, "ms": times, "speedup": speedup, **extra})
            note = "" if "same_tokens" not in extra else f"{extra['steps']} steps" + ("" if extra["same_tokens"] else ", TOKENS DIFFER")
            rows.append([op, shape, dt, _ms(times["torch"]), _ms(kernel_ms),
                         "-" if speedup is None else f"{speedup:.2f}x", note])

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"device: {device}{f' ({gpu})' if gpu else ''}, backend: {kernel_backend.name}, repeats: {repeats}, "
          f"{'CUDA events' if device.type == 'cuda' else 'median wall clock'}; ms per call (step loop: per step)")
    print(table(["op", "shape", "dtype", "torch ms", "kernel ms", "speedup", "note"], rows))
    if missing:
        print(missing)
    report = {"device": str(device), "gpu": gpu, "backend": kernel_backend.name, "repeats": repeats,
              "threads": torch.get_num_threads(),
              "torch": torch.__version__, "missing": missing, "results": results}
    if kernel_backend.name == "cuda":
        import cupy

        report["cupy"] = cupy.__version__
    if args.json_out:
        save_json(report, args.json_out)
    return 0 if all(r.get("same_tokens", True) for r in results) else 1
