"""`mercury-bench`: one command per number the project claims."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .report import RESULTS_DIR, save_json, table

TASKS_DIR = Path(__file__).parent / "tasks"


def shipped_task_files() -> list[Path]:
    return sorted(TASKS_DIR.glob("*.jsonl.gz")) + sorted(TASKS_DIR.glob("*.jsonl"))


def typing_task_files() -> list[str] | None:
    """The shipped tasks of the two commonest cursors, the end of a line typed so far and a fresh
    line: the prompts of latency and throughput."""
    return [str(p) for p in shipped_task_files() if p.name.startswith(("rest_of_line", "single_line"))] or None


def load_task_files(paths: list[str] | None, limit: int | None) -> tuple[list[dict], list[str]]:
    from .taskfile import read_tasks

    files = [Path(p) for p in paths] if paths else shipped_task_files()
    if not files:
        raise SystemExit("no task files: pass --tasks FILE.jsonl[.gz] or run `mercury-bench tasks` first")
    tasks = []
    for f in files:
        if not f.exists():
            raise SystemExit(f"no such task file: {f}")
        try:
            tasks += read_tasks(f, limit)
        except ValueError as e:
            raise SystemExit(str(e))
    return tasks, [str(f) for f in files]


def _thresholds(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("thresholds must be positive numbers")
    return values


def _common(p: argparse.ArgumentParser, model: bool = True) -> None:
    if model:
        p.add_argument("--model", help="diffusion model folder (default: the bundled model)")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    p.add_argument("--out-dir", default=str(RESULTS_DIR), help="where the latest results and plots are kept (default: %(default)s)")


def _task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", nargs="+", help="HumanEval-infilling JSONL files (default: the shipped held-out tasks)")
    p.add_argument("--limit", type=int, help="at most N tasks from each file")
    p.add_argument("--max-tokens", type=int, help="canvas size for every task (default: the task's max_tokens, else 64)")
    p.add_argument("--ar-model", "--baseline-ar", dest="ar_model", help="causal baseline model folder, decoded side by side")


def cmd_quality(args) -> int:
    from .decode import headline, progress, render
    from .decoders import autoregressive_decoder, diffusion_decoder, given_decoder, load_autoregressive, load_diffusion
    from .quality import evaluate

    tasks, files = load_task_files(args.tasks, args.limit)
    if args.completions:
        decoders = [given_decoder(args.completions)]
    else:
        sampler, _ = load_diffusion(args.model, args.device)
        decoders = [diffusion_decoder(sampler, t) for t in args.thresholds]
    if args.ar_model:
        decoders.append(autoregressive_decoder(load_autoregressive(args.ar_model, args.device)))
    settings = evaluate(tasks, decoders, timeout=args.timeout, workers=args.workers, max_tokens=args.max_tokens,
                        progress=progress)
    result = {"task_files": files, "settings": settings, "headline": headline(settings)}
    print(render(result))
    _save(result, args, "quality.json")
    return 0


def cmd_decode(args) -> int:
    from . import plots
    from .decode import render, run_decode
    from .decoders import load_autoregressive, load_diffusion

    tasks, files = load_task_files(args.tasks, args.limit)
    sampler, loaded = load_diffusion(args.model, args.device, context_cache=not args.no_context_cache)
    ar = load_autoregressive(args.ar_model, args.device) if args.ar_model else None
    result = run_decode(tasks, sampler, args.thresholds, ar, args.max_tokens, ablate_copy_prior=args.ablate_copy_prior)
    result.update(task_files=files, model=str(loaded.path), device=str(loaded.device), ar_model=args.ar_model,
                  context_cache=not args.no_context_cache)
    print(render(result))
    _save(result, args, "decode.json")
    plots.frontier(result, Path(args.out_dir) / "decode_frontier.png")
    return 0


def cmd_tasks(args) -> int:
    from .tasks import build_tasks, held_out_files, stdlib_held_out_files, write_task_files

    files = [Path(f) for f in args.files or []]
    if args.manifest:
        files += held_out_files(Path(args.manifest))
    if not files:
        files = stdlib_held_out_files()
    tasks = build_tasks(files, per_kind=args.per_kind, seed=args.seed, exec_share=args.exec_share,
                        timeout=args.timeout, workers=args.workers, log=lambda m: print(m, file=sys.stderr))
    meta = {"seed": args.seed, "per_kind": args.per_kind, "source_files": len(files),
            "held_out": args.manifest or ("files given" if args.files else "standard library, the corpus's held-out files")}
    summary = write_task_files(tasks, Path(args.out), meta)
    print(table(["kind", "tasks", "executable", "executable %"],
                [[k, summary[k]["tasks"], summary[k]["executable"], 100.0 * summary[k]["executable_share"]] for k in tasks]))
    return 0


def cmd_latency(args) -> int:
    from .latency import main as latency_main

    return latency_main(args)


def cmd_edits(args) -> int:
    from .edits import main as edits_main

    return edits_main(args)


def cmd_throughput(args) -> int:
    from .throughput import main as throughput_main

    return throughput_main(args)


def _save(result: dict, args, name: str) -> None:
    written = save_json(result, Path(args.out_dir) / name, args.json_out)
    print("results: " + ", ".join(map(str, written)), file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mercury-bench", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("quality", help="pass@1, exact match, edit similarity on HumanEval-infilling tasks, raw and as shown")
    _common(p)
    _task_args(p)
    p.add_argument("--thresholds", type=_thresholds, default=[0.9, 1.01],
                   help="diffusion confidence thresholds, comma-separated; above 1 means one token per step (default 0.9,1.01)")
    p.add_argument("--completions", help="score these completions (JSONL of task_id, completion) instead of a model")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per test program (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="test programs run at once (default %(default)s)")
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("decode", help="diffusion thresholds vs one token per step (vs autoregressive)")
    _common(p)
    _task_args(p)
    p.add_argument("--thresholds", type=_thresholds, default=[0.5, 0.7, 0.9, 1.01],
                   help="comma-separated; above 1 means one token per step (default 0.5,0.7,0.9,1.01)")
    p.add_argument("--no-context-cache", action="store_true",
                   help="recompute the whole canvas at every step (to measure what the context cache saves)")
    p.add_argument("--ablate-copy-prior", action="store_true",
                   help="also run every threshold with the context copy prior off (to measure what it adds)")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("tasks", help="build the held-out infilling tasks")
    p.add_argument("--out", default=str(TASKS_DIR), help="output folder (default: %(default)s)")
    p.add_argument("--manifest", help="corpus manifest.json whose held-out files to use (default: the standard-library "
                                      "files the training corpus holds out)")
    p.add_argument("--files", nargs="+", help="Python files to use (in addition to the manifest's)")
    p.add_argument("--per-kind", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exec-share", type=float, default=0.3, help="target share of executable tasks")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per verification run")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=cmd_tasks)

    from .latency import add_arguments as latency_args
    from .throughput import add_arguments as throughput_args

    p = sub.add_parser("latency", help="keystroke-to-suggestion through a real mercury-lsp session")
    _common(p)
    latency_args(p)
    p.set_defaults(func=cmd_latency)

    p = sub.add_parser("throughput", help="tokens/s and requests/s for 1..N concurrent engine clients")
    _common(p)
    throughput_args(p)
    p.set_defaults(func=cmd_throughput)

    from .edits import add_arguments as edits_args

    p = sub.add_parser("edits", help="what a keystroke costs the language server in a big document")
    _common(p, model=False)
    edits_args(p)
    p.set_defaults(func=cmd_edits)

    p = sub.add_parser("kernels", help="CUDA kernel micro-benchmarks (arguments go to the kernels bench)", add_help=False)
    p.set_defaults(func=None)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kernels"]:
        from .kernels import main as kernels_main  # the CUDA engineer's module takes its own arguments

        return kernels_main(argv[1:]) or 0
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ConnectionError, EOFError, RuntimeError, FileNotFoundError, ValueError) as e:
        # no engine, a model folder that is not one, an engine that died: one line, not a traceback
        print(f"mercury-bench {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
