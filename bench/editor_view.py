"""A task as the editor sees it: the language server's own context, line mode, post-processing and
confidence gate (imported from mercury_lsp, not copied), so the bench scores what a user is shown.

The cursor is where the task's middle starts; the document is prompt + suffix. The server picks
single-line or multi-line mode from that cursor alone, never from the task's kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from mercury_lsp.context import Context, context_between
from mercury_lsp.postprocess import postprocess
from mercury_lsp.settings import Settings

from .taskfile import MAX_TOKENS, task_kind

DEFAULTS = Settings()


def cursor_context(task: dict, settings: Settings = DEFAULTS) -> Context | None:
    return context_between(task["prompt"], task["suffix"], "python", settings.context_chars)


def max_tokens_for(task: dict, override: int | None = None) -> int:
    """The canvas: room for the longest middle of the task's kind, never its true length."""
    return override or int(task.get("max_tokens") or MAX_TOKENS.get(task_kind(task), 64))


def editor_request(task: dict, max_tokens: int | None = None, settings: Settings = DEFAULTS) -> dict:
    """What the language server would send the engine for this cursor."""
    ctx = cursor_context(task, settings)
    return {"task_id": task["task_id"], "prefix": ctx.prefix if ctx else task["prompt"],
            "suffix": ctx.suffix if ctx else task["suffix"], "single_line": bool(ctx and ctx.single_line),
            "max_tokens": max_tokens_for(task, max_tokens)}


@dataclass
class Shown:
    text: str  # inserted at the cursor; "" when nothing is shown
    status: str  # "kept", "changed", "removed" (by post-processing), "hidden" (minConfidence), "empty" (raw)
    task: dict  # the task to score `text` against: the suffix left after it, the middle that matches


def shown_view(task: dict, raw: str, confidence: float | None, settings: Settings = DEFAULTS) -> Shown:
    """What the editor shows for the engine text `raw`. Where the suggestion replaces characters
    after the cursor (closing brackets it writes itself), those move from the suffix into the
    expected middle, so that prompt + middle + suffix is still the document it produces."""
    if not raw.strip():
        return Shown("", "empty", task)
    if confidence is not None and confidence < settings.min_confidence:
        return Shown("", "hidden", task)
    ctx = cursor_context(task, settings)
    sug = postprocess(raw, ctx) if ctx else None
    if sug is None:
        return Shown("", "removed", task)
    k = sug.replace_chars
    scored = {**task, "suffix": task["suffix"][k:], "canonical_solution": task["canonical_solution"] + task["suffix"][:k]}
    return Shown(sug.text, "kept" if sug.text == raw and not k else "changed", scored)
