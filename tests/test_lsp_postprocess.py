"""Post-processing golden cases: document with a cursor (█), raw engine text, expected suggestion."""

import gzip
import json
from pathlib import Path

import pytest

from mercury_lsp.context import build_context, utf16_len
from mercury_lsp.postprocess import postprocess

CURSOR = "█"


def run(doc: str, raw: str, language: str = "python"):
    before, after = doc.split(CURSOR)
    line = before.count("\n")
    column = len(before.split("\n")[-1])  # ASCII documents: code points == UTF-16 units
    ctx = build_context(before + after, line, column, language, 6000)
    return postprocess(raw, ctx)


GOLDEN = [
    # (name, document, raw engine text, expected text or None, replaces the rest of the line)
    ("plain end of line", "x = █\n", "compute()", "compute()", False),
    ("a looping line is dropped", "x = █\n", "foo_with_with_with_with_with_with_with_with_with_bar", None, False),
    ("lines before a loop are kept", "def f():\n    █\n", "a = 1\n    b = g(1, 1, 1, 1, 1, 1, 1\n", "a = 1", False),
    ("a long unit repeated 4 times is a loop", "x = █\n", "self.check(x)self.check(x)self.check(x)self.check(x)", None, False),
    ("a separator line is not a loop", "█\n", "# ==============================", "# ==============================", False),
    ("real argument lists are code", "f(█)\n", "-1, -1, -1, -1, -1, -1, fd", "-1, -1, -1, -1, -1, -1, fd", False),
    ("short repeats are code", "x = █\n", "(0, 0, 0, 0)", "(0, 0, 0, 0)", False),
    ("whitespace only is dropped", "x = █\n", "  \n\t ", None, False),
    ("empty is dropped", "x = █\n", "", None, False),
    ("doubled space removed", "x = █\n", " 1", "1", False),
    ("trailing blank lines trimmed", "def f():\n    █\n", "return 1\n\n\n", "return 1", False),
    ("mid-line keeps one line", "foo(█, y)\n", "x\nmore()", "x", False),
    ("mid-line keeps its trailing space", "foo(█y)\n", "x, ", "x, ", False),
    ("suggestion equal to the rest of the line", "print(█value)\n", "value)", None, False),
    ("suggestion ending with the rest of the line", "call(█value)\n", "1, value)", "1, ", False),
    ("closing chars after cursor are covered", "print(█)\n", "x)", "x)", True),
    ("a whole line above closing chars keeps them below", "f(\n    1,\n█    )\n", "    g(2),\n", "    g(2),\n", False),
    ("a line repeating the one above is a loop", "def add(a, b):\n    return █\n",
     "a - b\n    return a - b\n    return a - b", "a - b", False),
    ("a line repeated further down is code", "def t(self):\n    █\n",
     "with self.assertRaises(TypeError):\n        f()\n    with self.assertRaises(TypeError):\n        g()",
     "with self.assertRaises(TypeError):\n        f()\n    with self.assertRaises(TypeError):\n        g()", False),
    ("a string the line opened stays open", 'print("{█\n', 'n} of {m}")', 'n} of {m}")', False),
    ("closing chars not written are kept", "print(█)\n", "x", "x", False),
    ("covered closers with more after them", "def f(█):\n", "a, b):", "a, b):", True),
    ("bracket closing the prefix is kept at end of line", "foo(a, █\n", "b)", "b)", False),
    ("stray closer is cut", "x = █\n", "1)\ny = 2", "1", False),
    ("closer duplicating the rest is cut when not covered", "f(g(█))\n", "x), y", "x", False),
    ("mismatched closer is cut", "x = █\n", "[1, 2)", "[1, 2", False),
    ("brackets in strings are ignored", "x = █\n", "'(' + \")\"", "'(' + \")\"", False),
    ("brackets in comments are ignored", "x = █\n", "1  # )", "1  # )", False),
    (
        "block ends when indentation drops below the cursor line",
        "def f(x):\n    █\n",
        "y = x + 1\n    return y\ndef g():\n    pass",
        "y = x + 1\n    return y",
        False,
    ),
    (
        "the completion's own block may be written in full",
        "def f(x):\n    █\n",
        "if x:\n        return 1\n    return 2\n\nprint(f(1))",
        "if x:\n        return 1\n    return 2",
        False,
    ),
    (
        "a new top-level definition after a finished one is dropped",
        "█\n",
        "def f():\n    return 1\ndef g():\n    return 2",
        "def f():\n    return 1",
        False,
    ),
    (
        "else continues the block",
        "def f(x):\n    █\n",
        "if x:\n        a = 1\n    else:\n        a = 2\n",
        "if x:\n        a = 1\n    else:\n        a = 2",
        False,
    ),
    (
        "a closing brace ends the block, siblings follow inside a function",
        "int f() {\n    █\n",
        "if (x) {\n        y();\n    }\n    z();\n}\nint g;",
        "if (x) {\n        y();\n    }\n    z();",
        False,
    ),
    (
        "a closing brace ends a top-level C block",
        "█\n",
        "int f() {\n    return 1;\n}\nint g() {",
        "int f() {\n    return 1;\n}",
        False,
    ),
    (
        "stop at the line that already follows the cursor",
        "def f(x):\n    █\n    return y\n",
        "y = x * 2\n    return y",
        "y = x * 2",
        False,
    ),
    ("a blank line repeating the next line is dropped", "def f():\n    █\n    return 1\n", "return 1", None, False),
    (
        "multi-line text left with open brackets is cut to its last balanced line",
        "█\n",
        "a = 1\nb = foo(1,\n    2",
        "a = 1",
        False,
    ),
    ("crlf from the engine is normalised", "x = █\n", "1\r\ny = 2", "1\ny = 2", False),
    (
        "cursor at the start of a line with code inserts whole lines above it",
        "def f(x):\n█    return y\n",
        "    y = x * 2\n    y += 1\n",
        "    y = x * 2\n    y += 1\n",
        False,
    ),
    (
        "cursor in the indentation keeps the code indented",
        "def f(x):\n    █return y\n",
        "y = x * 2",
        "y = x * 2\n    ",
        False,
    ),
    (
        "cursor in the indentation: stop where the existing line is repeated",
        "def f(x):\n    █return y\n",
        "y = x * 2\n    return y",
        "y = x * 2\n    ",
        False,
    ),
]


@pytest.mark.parametrize("name,doc,raw,expected,covers", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden(name, doc, raw, expected, covers):
    sug = run(doc, raw)
    if expected is None:
        assert sug is None
        return
    assert sug is not None
    assert sug.text == expected
    rest = doc.split(CURSOR)[1].split("\n")[0]
    assert sug.replace_chars == (len(rest) if covers else 0)


def test_hash_is_not_a_comment_in_c():
    sug = run("int x = █\n", "a[#]", language="c")
    assert sug.text == "a[#]"


def test_no_item_is_whitespace_only_for_any_engine_text():
    for raw in [" ", "\n", "\t\n  ", "\r\n", ")", "]]"]:
        sug = run("x = █\n", raw)
        assert sug is None or sug.text.strip()


TASKS = Path(__file__).resolve().parent.parent / "bench" / "tasks"


def code_lines(text: str) -> list[str]:
    """Lines without trailing spaces, blank lines left out (suggestions end without them)."""
    return [line.rstrip() for line in text.split("\n") if line.strip()]


@pytest.mark.parametrize("kind", ["single_line", "multi_line", "rest_of_line"])
def test_correct_middles_of_the_bench_tasks_survive_post_processing(kind):
    """Post-processing must not damage right answers: every canonical middle of the held-out
    tasks, post-processed in its document, gives back the same code."""
    path = TASKS / f"{kind}.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} not there")
    damaged = []
    for row in map(json.loads, gzip.open(path, "rt", encoding="utf-8")):
        prompt, suffix, middle = row["prompt"], row["suffix"], row["canonical_solution"]
        if code_lines(middle)[-1:] == code_lines(suffix)[:1]:
            continue  # a last line that repeats the next one is cut on purpose (cut_at_next_line)
        lines = prompt.split("\n")
        ctx = build_context(prompt + suffix, len(lines) - 1, utf16_len(lines[-1]), "python", 6000)
        sug = postprocess(middle, ctx)
        applied = prompt + (sug.text if sug else "") + suffix[sug.replace_chars if sug else 0 :]
        if code_lines(applied) != code_lines(prompt + middle + suffix):
            damaged.append(row["task_id"])
    assert damaged == []
