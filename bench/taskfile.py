"""Read and write infilling tasks in the HumanEval-infilling JSONL format (optionally gzipped).

Fields: task_id, prompt, suffix, canonical_solution, and test + entry_point where the task is
executable. The project's own tasks add `kind`, `source` and `max_tokens`; a published file's kind
comes from its task-id prefix (`SingleLineInfilling/HumanEval/0/L0`).
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

REQUIRED = ("task_id", "prompt", "suffix", "canonical_solution")
KINDS = ("single_line", "multi_line", "random_span", "rest_of_line")
# The canvas the bench asks for: room for the longest middle of the kind, not its true length.
MAX_TOKENS = {"single_line": 48, "multi_line": 128, "random_span": 64, "rest_of_line": 32}
PUBLISHED_KINDS = {"SingleLineInfilling": "single_line", "MultiLineInfilling": "multi_line",
                   "RandomSpanInfilling": "random_span", "RandomSpanInfillingLight": "random_span"}


def _open(path: Path, mode: str):
    return gzip.open(path, mode + "t", encoding="utf-8") if path.suffix == ".gz" else open(path, mode, encoding="utf-8")


def read_tasks(path: str | Path, limit: int | None = None) -> list[dict]:
    """Tasks in file order; a line that is not a task is a clear error naming the line."""
    path = Path(path)
    tasks = []
    with _open(path, "r") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                task = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
            missing = [k for k in REQUIRED if not isinstance(task, dict) or not isinstance(task.get(k), str)]
            if missing:
                raise ValueError(f"{path}:{n}: task lacks string field(s) {', '.join(missing)}")
            tasks.append(task)
            if limit is not None and len(tasks) >= limit:
                break
    return tasks


def write_tasks(path: str | Path, tasks: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip bytes identical for identical tasks.
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write("".join(json.dumps(t) + "\n" for t in tasks).encode("utf-8"))
    else:
        path.write_text("".join(json.dumps(t) + "\n" for t in tasks), encoding="utf-8")


def is_executable(task: dict) -> bool:
    return bool(task.get("test")) and bool(task.get("entry_point"))


def task_kind(task: dict) -> str:
    """The task's own `kind`, else the kind its HumanEval-infilling task-id prefix names."""
    if task.get("kind"):
        return task["kind"]
    return PUBLISHED_KINDS.get(task["task_id"].split("/", 1)[0], "task")


def round_robin(tasks: list[dict]) -> list[dict]:
    """One task of each kind in turn, so that the first N tasks mix the kinds."""
    by_kind: dict[str, list[dict]] = {}
    for t in tasks:
        by_kind.setdefault(task_kind(t), []).append(t)
    return [t for group in itertools.zip_longest(*by_kind.values()) for t in group if t is not None]
