"""Score infilling completions two ways, raw and as the editor shows them: pass@1 by execution,
exact match, whitespace-normalised match, edit similarity, speed, and the share left empty."""

from __future__ import annotations

import difflib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable

from .editor_view import DEFAULTS, editor_request, shown_view
from .execution import build_program, run_program
from .report import percentile, table
from .taskfile import KINDS, is_executable, task_kind

GATES = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # candidate minConfidence values of the language server


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
    view: str = "raw"  # or the editor view's status: kept, changed, removed, hidden, empty


def normalise_ws(text: str) -> str:
    return " ".join(text.split())


def edit_similarity(a: str, b: str) -> float:
    """100 * (1 - normalised edit distance), approximated by difflib's matching-blocks ratio (the
    pure-Python fuzz.ratio): partial credit where exact match gives none."""
    return 100.0 * difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() if a or b else 100.0


@dataclass
class Decoder:
    """One setting of the side-by-side table: a name and a function from an editor request (see
    editor_view.editor_request) to what the decoder wrote."""

    label: str
    complete: Callable[[dict], Generation]
    decoder: str = "diffusion"  # "diffusion", "autoregressive" or "given"
    threshold: float | None = None
    copy_prior: bool = True


def is_exact(text: str, expected: str) -> bool:
    """Equal up to trailing whitespace at the end of the middle (a suggestion is shown without it
    where the cursor line is blank); indentation and every inner character count."""
    return text.rstrip() == expected.rstrip()


def generate_all(requests: list[dict], complete: Callable[[dict], Generation], progress=None) -> list[Generation]:
    out = []
    for i, request in enumerate(requests):
        start = time.perf_counter()
        gen = complete(request)
        if not gen.ms:
            gen.ms = (time.perf_counter() - start) * 1000
        out.append(gen)
        if progress:
            progress(i + 1, len(requests))
    return out


def score(tasks: list[dict], generations: list[Generation], timeout: float = 10.0, workers: int = 2,
          run_tests: bool = True, views: list[str] | None = None) -> list[Outcome]:
    """Compare with the canonical solution and run the tests (in parallel child processes).
    `views`: the editor view's status of each completion (editor_view.Shown.status)."""

    def judge(i):
        task, gen = tasks[i], generations[i]
        expected = task["canonical_solution"]
        passed, status, detail = None, "no test", ""
        if run_tests and is_executable(task):
            program = build_program(task["prompt"], gen.text, task["suffix"], task["test"], task["entry_point"])
            run = run_program(program, timeout)
            passed, status, detail = run.status == "passed", run.status, run.detail
        return Outcome(
            task_id=task["task_id"], kind=task_kind(task), completion=gen.text,
            exact=is_exact(gen.text, expected), exact_ws=normalise_ws(gen.text) == normalise_ws(expected),
            edit_sim=edit_similarity(gen.text, expected),
            passed=passed, status=status, detail=detail, ms=gen.ms, tokens=gen.tokens, forwards=gen.forwards,
            confidence=gen.confidence, view=views[i] if views else "raw",
        )

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(judge, range(len(tasks))))


def score_shown(tasks: list[dict], generations: list[Generation], timeout: float = 10.0, workers: int = 2,
                run_tests: bool = True) -> list[Outcome]:
    """The same completions as the editor would show them (editor_view.shown_view)."""
    views = [shown_view(t, g.text, g.confidence) for t, g in zip(tasks, generations)]
    shown = [Generation(v.text, g.ms, g.tokens, g.forwards, g.confidence) for v, g in zip(views, generations)]
    return score([v.task for v in views], shown, timeout, workers, run_tests, [v.status for v in views])


def grouped(outcomes: list[Outcome]) -> dict[str, list[Outcome]]:
    """Outcomes per kind (the field's kinds first), then "all"."""
    groups: dict[str, list[Outcome]] = {k: [] for k in KINDS}
    for o in outcomes:
        groups.setdefault(o.kind, []).append(o)
    groups = {k: v for k, v in groups.items() if v}
    groups["all"] = list(outcomes)
    return groups


def summarize(outcomes: list[Outcome]) -> dict[str, dict]:
    """Per kind and overall ("all"): counts, rates in percent, ms, tokens per forward; for the
    editor view also how often post-processing changed or removed the text, and the gate hid it."""
    summary = {}
    for kind, group in grouped(outcomes).items():
        n = len(group)
        executed = [o for o in group if o.passed is not None]
        forwards = sum(o.forwards for o in group)
        ms = [o.ms for o in group]
        summary[kind] = {
            "tasks": n,
            "pass@1": 100.0 * sum(o.passed for o in executed) / len(executed) if executed else None,
            "exact": 100.0 * sum(o.exact for o in group) / n,
            "exact_ws": 100.0 * sum(o.exact_ws for o in group) / n,
            "edit_sim": sum(o.edit_sim for o in group) / n,
            "no_suggestion": 100.0 * sum(not o.completion.strip() for o in group) / n,
            "executable": len(executed),
            "timeouts": sum(o.status == "timeout" for o in group),
            "ms_mean": sum(ms) / n,
            "ms_p50": percentile(ms, 50),
            "ms_p95": percentile(ms, 95),
            "tokens": sum(o.tokens for o in group),
            "forwards": forwards,
            "tokens_per_forward": sum(o.tokens for o in group) / forwards if forwards else None,
        }
        if any(o.view != "raw" for o in group):
            for status in ("changed", "removed", "hidden"):
                summary[kind][status] = 100.0 * sum(o.view == status for o in group) / n
    return summary


def evaluate(tasks: list[dict], decoders: list[Decoder], run_tests: bool = True, timeout: float = 10.0,
             workers: int = 2, max_tokens: int | None = None, progress=None) -> list[dict]:
    """Every decoder on the same editor requests, each completion scored raw and as shown."""
    requests = [editor_request(t, max_tokens) for t in tasks]
    settings = []
    for d in decoders:
        generations = generate_all(requests, d.complete, progress(d.label) if progress else None)
        raw = score(tasks, generations, timeout, workers, run_tests)
        shown = score_shown(tasks, generations, timeout, workers, run_tests)
        settings.append({"decoder": d.decoder, "threshold": d.threshold, "label": d.label, "copy_prior": d.copy_prior,
                         "summary": summarize(raw), "shown": summarize(shown),
                         "confidence_gate": confidence_gate(raw, GATES),
                         "outcomes": outcomes_json(raw), "shown_outcomes": outcomes_json(shown)})
    return settings


def render(settings: list[dict]) -> str:
    """The side-by-side table: every decoder and kind, raw and as shown; then what the editor's
    post-processing and gate did."""
    rows, edits = [], []
    for s in settings:
        for kind in s["summary"]:
            for view, m in (("raw", s["summary"][kind]), ("shown", s["shown"][kind])):
                rows.append([s["label"], kind, view, m["tasks"], m["pass@1"], m["exact"], m["edit_sim"],
                             m["tokens_per_forward"], m["ms_p50"], m["ms_p95"], m["no_suggestion"]])
            m = s["shown"][kind]
            edits.append([s["label"], kind, m["changed"], m["removed"], m["hidden"]])
    text = table(["decoder", "kind", "view", "tasks", "pass@1 %", "exact %", "edit sim", "tokens/forward",
                  "ms p50", "ms p95", "empty %"], rows)
    text += f"\n\nwhat the editor did to the raw text (minConfidence {DEFAULTS.min_confidence:g}), % of tasks:\n"
    return text + table(["decoder", "kind", "changed %", "removed %", "hidden %"], edits)


def confidence_gate(outcomes: list[Outcome], gates: list[float]) -> list[dict]:
    """What a client that hides completions below a confidence (the language server's
    minConfidence) would show: the share kept and how good those are, against what it hides."""
    rated = [o for o in outcomes if o.confidence is not None]
    if not rated:
        return []
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
