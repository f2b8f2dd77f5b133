"""Score infilling completions: exact match, whitespace-normalised match, edit similarity, and
pass@1 by execution."""

from __future__ import annotations

import difflib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable

from .execution import build_program, run_program
from .report import percentile
from .taskfile import is_executable


@dataclass
class Generation:
    """What a decoder produced for one task."""

    text: str
    ms: float = 0.0
    tokens: int = 0
    forwards: int = 0
    confidence: float | None = None  # the engine's: geometric mean of the committed tokens' probabilities


@dataclass
class Outcome:
    task_id: str
    kind: str
    completion: str
    exact: bool
    exact_ws: bool
    edit_sim: float  # 0..100, as CodeXGLUE and CrossCodeEval report it next to exact match
    passed: bool | None  # None: the task has no test
    status: str  # "passed", "failed", "timeout" or "no test"
    detail: str
    ms: float
    tokens: int
    forwards: int
    confidence: float | None = None


def normalise_ws(text: str) -> str:
    return " ".join(text.split())


def edit_similarity(a: str, b: str) -> float:
    """100 * (1 - normalised edit distance), approximated by difflib's matching-blocks ratio (the
    pure-Python fuzz.ratio): partial credit where exact match gives none."""
    return 100.0 * difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() if a or b else 100.0


def task_kind(task: dict) -> str:
    return task.get("kind") or "task"


def generate_all(tasks: list[dict], complete: Callable[[dict], Generation], progress=None) -> list[Generation]:
    out = []
    for i, task in enumerate(tasks):
        start = time.perf_counter()
        gen = complete(task)
        if not gen.ms:
            gen.ms = (time.perf_counter() - start) * 1000
        out.append(gen)
        if progress:
            progress(i + 1, len(tasks))
    return out


def score(tasks: list[dict], generations: list[Generation], timeout: float = 10.0, workers: int = 2,
          run_tests: bool = True) -> list[Outcome]:
    """Compare with the canonical solution and run the tests (in parallel child processes)."""

    def judge(pair):
        task, gen = pair
        expected = task["canonical_solution"]
        passed, status, detail = None, "no test", ""
        if run_tests and is_executable(task):
            program = build_program(task["prompt"], gen.text, task["suffix"], task["test"], task["entry_point"])
            run = run_program(program, timeout)
            passed, status, detail = run.status == "passed", run.status, run.detail
        return Outcome(
            task_id=task["task_id"], kind=task_kind(task), completion=gen.text,
            exact=gen.text == expected, exact_ws=normalise_ws(gen.text) == normalise_ws(expected),
            edit_sim=edit_similarity(gen.text, expected),
            passed=passed, status=status, detail=detail, ms=gen.ms, tokens=gen.tokens, forwards=gen.forwards,
            confidence=gen.confidence,
        )

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(judge, zip(tasks, generations)))


def summarize(outcomes: list[Outcome]) -> dict[str, dict]:
    """Per kind and overall ("all"): counts, rates in percent, mean ms, tokens per forward."""
    groups: dict[str, list[Outcome]] = {"all": list(outcomes)}
    for o in outcomes:
        groups.setdefault(o.kind, []).append(o)
    summary = {}
    for kind, group in groups.items():
        if not group:
            continue
        executed = [o for o in group if o.passed is not None]
        forwards = sum(o.forwards for o in group)
        summary[kind] = {
            "tasks": len(group),
            "exact": 100.0 * sum(o.exact for o in group) / len(group),
            "exact_ws": 100.0 * sum(o.exact_ws for o in group) / len(group),
            "edit_sim": sum(o.edit_sim for o in group) / len(group),
            "executable": len(executed),
            "pass@1": 100.0 * sum(o.passed for o in executed) / len(executed) if executed else None,
            "timeouts": sum(o.status == "timeout" for o in group),
            "ms_mean": sum(o.ms for o in group) / len(group),
            "ms_p50": percentile([o.ms for o in group], 50),
            "tokens": sum(o.tokens for o in group),
            "forwards": forwards,
            "tokens_per_forward": sum(o.tokens for o in group) / forwards if forwards else None,
        }
    return summary


def confidence_gate(outcomes: list[Outcome], gates: list[float]) -> list[dict]:
    """What a client that hides completions below a confidence (the language server's
    minConfidence) would show: the share kept and how good those are, against what it hides."""
    rated = [o for o in outcomes if o.confidence is not None]
    rows = []
    for gate in gates:
        shown = [o for o in rated if o.confidence >= gate]
        hidden = [o for o in rated if o.confidence < gate]
        rows.append({
            "min_confidence": gate, "shown": len(shown), "hidden": len(hidden),
            "exact_shown": 100.0 * sum(o.exact for o in shown) / len(shown) if shown else None,
            "edit_sim_shown": sum(o.edit_sim for o in shown) / len(shown) if shown else None,
            "exact_hidden": sum(o.exact for o in hidden),
            "edit_sim_hidden": sum(o.edit_sim for o in hidden) / len(hidden) if hidden else None,
        })
    return rows


def outcomes_json(outcomes: list[Outcome]) -> list[dict]:
    return [asdict(o) for o in outcomes]
