"""Read and write infilling tasks in the HumanEval-infilling JSONL format (optionally gzipped).

Fields: task_id, prompt, suffix, canonical_solution, and test + entry_point where the task is
executable. The project's own tasks add `kind` (single_line, multi_line, random_span) and `source`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

REQUIRED = ("task_id", "prompt", "suffix", "canonical_solution")


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
