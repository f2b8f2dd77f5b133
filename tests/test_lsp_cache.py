"""Completion cache (exact and typed-ahead hits) and settings parsing."""

from mercury_lsp.cache import CompletionCache
from mercury_lsp.context import build_context
from mercury_lsp.postprocess import postprocess
from mercury_lsp.settings import Settings


def ctx_after(text):
    lines = text.split("\n")
    return build_context(text, len(lines) - 1, len(lines[-1]), "python", 6000)


def test_exact_context_hits():
    cache = CompletionCache()
    ctx = ctx_after("def add(a, b):\n    return ")
    cache.put(ctx, "a + b")
    hit = cache.get(ctx_after("def add(a, b):\n    return "))
    assert hit.text == "a + b" and hit.typed == 0


def test_typing_the_beginning_of_a_suggestion_serves_the_rest():
    cache = CompletionCache()
    cache.put(ctx_after("def add(a, b):\n    return "), "a + b")
    hit = cache.get(ctx_after("def add(a, b):\n    return a +"))
    assert hit.text == " b" and hit.typed == 3


def test_typing_something_else_misses():
    cache = CompletionCache()
    cache.put(ctx_after("def add(a, b):\n    return "), "a + b")
    assert cache.get(ctx_after("def add(a, b):\n    return b")) is None
    assert cache.get(ctx_after("def add(a, c):\n    return ")) is None


def test_typing_the_whole_suggestion_leaves_nothing_to_serve():
    cache = CompletionCache()
    cache.put(ctx_after("x = "), "1")
    assert cache.get(ctx_after("x = 1")) is None


def test_different_text_after_the_cursor_misses():
    cache = CompletionCache()
    text = "x = \ny = 2\n"
    cache.put(build_context(text, 0, 4, "python", 6000), "1")
    other = "x = \ny = 3\n"
    assert cache.get(build_context(other, 0, 4, "python", 6000)) is None
    assert cache.get(build_context(text, 0, 4, "python", 6000)).text == "1"


def test_lru_evicts_the_oldest():
    cache = CompletionCache(size=2)
    for i in range(3):
        cache.put(ctx_after(f"v{i} = "), str(i))
    assert cache.get(ctx_after("v0 = ")) is None
    assert cache.get(ctx_after("v2 = ")).text == "2"


def test_settings_accept_nested_camel_case_and_report_bad_values():
    s = Settings()
    problems = s.update({"mercury": {"budgetMs": 500, "maxTokens": 16, "debounce_ms": 0,
                                      "engineSocket": "/tmp/x.sock", "engineCommand": "python -m x",
                                      "enabled": "yes", "max_tokens_typo": 1, "minConfidence": 0.5}})
    assert s.min_confidence == 0.5 and Settings().min_confidence > 0  # a gate is on unless turned off
    assert s.budget_ms == 500 and s.max_tokens == 16 and s.debounce_ms == 0
    assert s.engine_socket == "/tmp/x.sock" and s.engine_command == ["python", "-m", "x"]
    assert s.enabled is True  # "yes" is not a boolean: ignored with a message
    assert len(problems) == 1 and "enabled" in problems[0]


def test_settings_reject_out_of_range_and_wrong_types():
    s = Settings()
    problems = s.update({"max_tokens": 100000, "budget_ms": "fast", "model": 3, "context_chars": 10,
                         "engine_device": "tpu", "minConfidence": 1.5})
    assert len(problems) == 6
    assert s == Settings()
    assert Settings().update("not a map")
    assert Settings().update(None) == []


def test_auto_closed_bracket_does_not_hide_a_typed_through_suggestion():
    cache = CompletionCache()
    cache.put(ctx_after("total = "), "sum(values)")
    # The user types "sum(" and the editor adds ")" after the cursor.
    text = "total = sum()"
    ctx = build_context(text, 0, len("total = sum("), "python", 6000)
    hit = cache.get(ctx)
    assert hit.text == "values)" and hit.typed == 4
    sug = postprocess(hit.text, ctx)
    assert sug.text == "values)" and sug.replace_chars == 1  # replaces the auto-closed ")"


def test_an_empty_answer_is_remembered_but_never_typed_through():
    cache = CompletionCache()
    cache.put(ctx_after("x = "), "")
    hit = cache.get(ctx_after("x = "))
    assert hit.text == "" and hit.typed == 0
    assert cache.get(ctx_after("x = 1")) is None
