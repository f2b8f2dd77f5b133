"""Build HumanEval-infilling tasks from held-out Python files (files training never saw).

Four kinds, each deterministic for a seed, the first three as HumanEval-infilling cuts them:
- single_line: one whole code line, from column 0 through its line break;
- multi_line: whole lines of a block: a function body after its signature and docstring, or the
  body of an `if`, `for`, `with` ... (2-15 lines, from column 0 through the last line break);
- random_span: a random character span anywhere in the file;
- rest_of_line: the tail of a code line from a cut point inside it to the line end (the line break
  stays in the suffix), the commonest keystroke in an editor.
A task whose middle lies inside a unittest `test*` method, a doctested function or a top-level
`test_*` function gets `test`/`entry_point`, but only after checking that the original middle
passes and an empty middle does not, so pass@1 measures something.
"""

from __future__ import annotations

import ast
import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .execution import build_program, run_program
from .taskfile import KINDS, MAX_TOKENS, write_tasks

PROMPT_CHARS, SUFFIX_CHARS = 4000, 2000  # plenty for the models' 512-token context
MAX_FILE_CHARS = 400_000
MAX_EXECUTABLE_CHARS = 80_000  # an executable task carries its whole file

UNITTEST_CHECK = """def check(candidate):
    import unittest
    result = unittest.TestResult()
    unittest.TestSuite([candidate({method!r})]).run(result)
    assert result.testsRun == 1 and not result.skipped and result.wasSuccessful(), result.errors + result.failures
"""

DOCTEST_CHECK = """def check(candidate):
    import doctest
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(recurse=False).find(candidate, candidate.__name__, globs=dict(globals())):
        runner.run(test, out=lambda text: None)
    assert runner.tries > 0 and runner.failures == 0, f"{runner.failures} of {runner.tries} examples failed"
"""

BLOCKS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try)

CALL_CHECK = """def check(candidate):
    candidate()
"""


@dataclass
class Testable:
    start_line: int  # 1-based, inclusive: the lines a middle must stay within
    end_line: int
    entry_point: str
    test: str


@dataclass
class Source:
    name: str
    text: str
    line_starts: list[int]  # char offset of each line (index 0 = line 1)
    testables: list[Testable]
    blocks: list[ast.stmt]  # compound statements whose body a multi-line task may remove
    docstring_lines: set[int]

    def offset(self, line: int, col: int = 0) -> int:
        return self.line_starts[line - 1] + col

    def line(self, n: int) -> str:
        end = self.line_starts[n] if n < len(self.line_starts) else len(self.text)
        return self.text[self.line_starts[n - 1]:end]

    def testable_for(self, start: int, end: int) -> Testable | None:
        """The testable function containing the whole character range [start, end)."""
        for t in self.testables:
            if self.offset(t.start_line) <= start and end <= self.offset(t.end_line) + len(self.line(t.end_line)):
                return t
        return None


def strip_main_block(text: str, tree: ast.Module) -> str:
    """Drop a trailing `if __name__ == "__main__":` block so the file runs as a plain program."""
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.If) and "__name__" in ast.unparse(last.test) and "__main__" in ast.unparse(last.test):
        return "".join(text.splitlines(keepends=True)[: last.lineno - 1])
    return text


def _docstring(node) -> ast.Expr | None:
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        return body[0]
    return None


def _is_testcase(cls: ast.ClassDef) -> bool:
    names = [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in cls.bases]
    return any(n.endswith("TestCase") for n in names)


def _testables(tree: ast.Module) -> list[Testable]:
    found = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and _is_testcase(node):
            for m in node.body:
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and m.name.startswith("test"):
                    found.append(Testable(m.lineno, m.end_lineno, node.name, UNITTEST_CHECK.format(method=m.name)))
        elif isinstance(node, ast.FunctionDef):
            doc = _docstring(node)
            if doc is not None and ">>>" in doc.value.value:
                found.append(Testable(node.lineno, node.end_lineno, node.name, DOCTEST_CHECK))
            elif node.name.startswith("test_") and not node.args.args and not node.decorator_list:
                found.append(Testable(node.lineno, node.end_lineno, node.name, CALL_CHECK))
    return found


def load_source(path: Path, name: str) -> Source | None:
    try:
        text = path.read_text(encoding="utf-8")
        if len(text) > MAX_FILE_CHARS or "\r" in text:
            return None
        text = strip_main_block(text, ast.parse(text))
        tree = ast.parse(text)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
        return None
    starts, pos = [], 0
    for line in text.splitlines(keepends=True):
        starts.append(pos)
        pos += len(line)
    blocks = [n for n in ast.walk(tree) if isinstance(n, BLOCKS)]
    doc_lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            doc_lines.update(range(node.lineno, node.end_lineno + 1))
    return Source(name, text, starts, _testables(tree), blocks, doc_lines)


# Candidate middles: (start, end) character ranges in a source.

def code_line(src: Source, n: int) -> bool:
    """Line n holds code worth a task: not blank, a comment, a docstring or an overlong line."""
    line = src.line(n).rstrip("\n")
    body = line.strip()
    return bool(body) and not body.startswith(("#", "@")) and n not in src.docstring_lines and len(line) <= 120 and len(body) >= 3


def single_line_cut(src: Source, rng: random.Random) -> tuple[int, int] | None:
    for _ in range(20):
        n = rng.randint(1, len(src.line_starts))
        if code_line(src, n) and src.line(n).endswith("\n"):
            return src.offset(n), src.offset(n) + len(src.line(n))
    return None


def rest_of_line_cut(src: Source, rng: random.Random) -> tuple[int, int] | None:
    for _ in range(20):
        n = rng.randint(1, len(src.line_starts))
        if not code_line(src, n):
            continue
        line = src.line(n).rstrip("\n")
        indent = len(line) - len(line.lstrip())
        cut = rng.randint(indent, len(line.rstrip()) - 1)
        return src.offset(n, cut), src.offset(n, len(line))
    return None


def block_bodies(src: Source):
    """(first line, last line) of every statement body that starts on a line of its own: function
    bodies after their docstring, and the bodies of if/for/while/with/try blocks."""
    for node in src.blocks:
        body = node.body[1:] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _docstring(node) else node.body
        if not body:
            continue
        header_end = node.body[0].end_lineno if body is not node.body else node.lineno
        decorators = getattr(body[0], "decorator_list", [])
        first = decorators[0].lineno if decorators else body[0].lineno
        column = decorators[0].col_offset - 1 if decorators else body[0].col_offset  # "@" precedes a decorator
        if first > header_end and not src.line(first)[:column].strip():  # not `def f(a,\n b): return a`
            yield first, body[-1].end_lineno


def multi_line_cut(src: Source, rng: random.Random) -> tuple[int, int] | None:
    bodies = list(block_bodies(src))
    rng.shuffle(bodies)
    for first, last in bodies:
        start, end = src.offset(first), src.offset(last) + len(src.line(last))
        if 2 <= last - first + 1 <= 15 and end - start <= 800 and src.text[end - 1:end] == "\n":
            return start, end
    return None


def random_span_cut(src: Source, rng: random.Random) -> tuple[int, int] | None:
    for _ in range(20):
        start = rng.randrange(len(src.text))
        end = min(len(src.text), start + rng.randint(5, 200))
        if src.text[start:end].strip():
            return start, end
    return None


CUTTERS = {"single_line": single_line_cut, "multi_line": multi_line_cut, "random_span": random_span_cut,
           "rest_of_line": rest_of_line_cut}


def make_task(src: Source, kind: str, start: int, end: int, testable: Testable | None) -> dict:
    prompt, suffix = src.text[:start], src.text[end:]
    if testable is None:  # no program to run: keep only the context a model can use
        prompt = prompt[-PROMPT_CHARS:]
        prompt = prompt[prompt.find("\n") + 1:] if len(prompt) == PROMPT_CHARS and "\n" in prompt else prompt
        suffix = suffix[:SUFFIX_CHARS]
        suffix = suffix[: suffix.rfind("\n") + 1] if len(suffix) == SUFFIX_CHARS and "\n" in suffix else suffix
    task = {"task_id": "", "kind": kind, "source": src.name, "prompt": prompt, "suffix": suffix,
            "canonical_solution": src.text[start:end], "max_tokens": MAX_TOKENS[kind]}
    if testable is not None:
        task["test"], task["entry_point"] = testable.test, testable.entry_point
    return task


def test_discriminates(task: dict, timeout: float) -> bool:
    """The original middle passes and an empty middle fails."""
    def runs(middle):
        program = build_program(task["prompt"], middle, task["suffix"], task["test"], task["entry_point"])
        return run_program(program, timeout).status == "passed"
    return runs(task["canonical_solution"]) and not runs("")


def build_kind(sources: list[Source], kind: str, count: int, exec_share: float, rng: random.Random,
               timeout: float, workers: int, log=print) -> list[dict]:
    cutter = CUTTERS[kind]
    # Executable first: candidates inside testable functions, verified in parallel child processes.
    testable_sources = [s for s in sources if s.testables and len(s.text) <= MAX_EXECUTABLE_CHARS]
    want_exec = int(count * exec_share) if testable_sources else 0
    candidates, seen = [], set()
    for _ in range(want_exec * 3):
        src = rng.choice(testable_sources)
        cut = cutter(src, rng)
        t = cut and src.testable_for(*cut)
        if t and (src.name, cut) not in seen:
            seen.add((src.name, cut))
            candidates.append(make_task(src, kind, *cut, t))
    tasks, tried = [], 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while len(tasks) < want_exec and tried < len(candidates):
            chunk = candidates[tried:tried + 4 * workers]
            tried += len(chunk)
            tasks += [t for t, ok in zip(chunk, pool.map(lambda task: test_discriminates(task, timeout), chunk)) if ok]
    tasks = tasks[:want_exec]
    log(f"{kind}: {len(tasks)} executable tasks ({tried} of {len(candidates)} candidates tried)")
    # Then plain tasks, one file after another in a shuffled round robin so no file dominates.
    order = list(sources)
    rng.shuffle(order)
    attempts = 0
    while len(tasks) < count and attempts < count * 20:
        src = order[attempts % len(order)]
        attempts += 1
        cut = cutter(src, rng)
        if cut and (src.name, cut) not in seen:
            seen.add((src.name, cut))
            tasks.append(make_task(src, kind, *cut, None))
    rng.shuffle(tasks)  # so that `--limit N` takes a fair sample, not the executable ones first
    for i, task in enumerate(tasks):
        task["task_id"] = f"{kind}/{i}"
    return tasks


def build_tasks(files: list[Path], per_kind: int = 300, seed: int = 0, exec_share: float = 0.3,
                timeout: float = 10.0, workers: int = 2, log=print) -> dict[str, list[dict]]:
    files = sorted({Path(f).resolve() for f in files})
    root = files[0].parent if len(files) == 1 else Path(os.path.commonpath(files))
    sources = [s for f in files if (s := load_source(f, str(f.relative_to(root)))) is not None]
    if not sources:
        raise ValueError("none of the given files is a readable Python source")
    log(f"{len(sources)} of {len(files)} files usable, {sum(len(s.testables) for s in sources)} testable functions")
    result = {}
    for k, kind in enumerate(KINDS):
        rng = random.Random(seed * 1000 + k)
        result[kind] = build_kind(sources, kind, per_kind, exec_share, rng, timeout, workers, log)
    return result


def stdlib_held_out_files() -> list[Path]:
    """The standard-library files the training corpus holds out (by a hash of their path), which
    the bundled model never saw."""
    from mercury_engine.corpus import collect, stdlib_root

    return [Path(f["path"]) for f in collect([("stdlib", stdlib_root())])["files"]["heldout"]]


def held_out_files(manifest: Path) -> list[Path]:
    """The held-out files of the corpus manifest that `mercury-engine train` writes
    (`files.heldout[].path`); relative paths are taken from the manifest's folder."""
    data = json.loads(Path(manifest).read_text())
    entries = (data.get("files") or {}).get("heldout")
    if not isinstance(entries, list):
        raise ValueError(f"{manifest} has no files.heldout list")
    paths = [Path(e["path"] if isinstance(e, dict) else e) for e in entries]
    return [p if p.is_absolute() else Path(manifest).parent / p for p in paths]


def write_task_files(tasks: dict[str, list[dict]], out: Path, meta: dict) -> dict:
    out = Path(out)
    summary = dict(meta)
    for kind, items in tasks.items():
        write_tasks(out / f"{kind}.jsonl.gz", items)
        n_exec = sum("test" in t for t in items)
        summary[kind] = {"tasks": len(items), "executable": n_exec,
                         "executable_share": round(n_exec / len(items), 3) if items else 0.0}
    (out / "manifest.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
