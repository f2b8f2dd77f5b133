"""mercury-bench quality scoring: exact match, whitespace-normalised match, pass@1 by execution,
raw and as the editor shows it, on the published HumanEval-infilling layout."""

import json
import socket
import subprocess
import sys
import threading

import pytest

from mercury_bench.execution import build_program, run_program
from mercury_bench.editor_view import editor_request, shown_view
from mercury_bench.quality import Generation, score, summarize
from mercury_bench.taskfile import read_tasks, task_kind, write_tasks

TOY = [
    {"task_id": "toy/add", "kind": "multi_line", "prompt": "def add(a, b):\n", "suffix": "\n",
     "canonical_solution": "    return a + b\n", "entry_point": "add",
     "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"},
    {"task_id": "toy/max", "kind": "single_line", "prompt": "def biggest(xs):\n    return ", "suffix": "\n",
     "canonical_solution": "max(xs)", "entry_point": "biggest",
     "test": "def check(candidate):\n    assert candidate([3, 9, 2]) == 9\n"},
    {"task_id": "toy/plain", "kind": "single_line", "prompt": "x = ", "suffix": "\n",
     "canonical_solution": "foo(1,  2)"},
]
ANSWERS = {"toy/add": "    return a + b\n", "toy/max": "min(xs)", "toy/plain": "foo(1, 2)"}


def test_scores_exact_whitespace_and_pass_at_1():
    outcomes = score(TOY, [Generation(ANSWERS[t["task_id"]]) for t in TOY], timeout=30)
    add, big, plain = outcomes
    assert (add.exact, add.passed, add.status) == (True, True, "passed")
    assert score(TOY[:1], [Generation("    return a + b")], run_tests=False)[0].exact  # trailing whitespace aside
    assert not score(TOY[:1], [Generation("  return a + b\n")], run_tests=False)[0].exact  # indentation counts
    assert (big.exact, big.exact_ws, big.passed, big.status) == (False, False, False, "failed")
    assert "AssertionError" in big.detail
    assert (plain.exact, plain.exact_ws, plain.passed, plain.status) == (False, True, None, "no test")
    s = summarize(outcomes)
    assert s["all"]["tasks"] == 3 and s["all"]["executable"] == 2
    assert s["all"]["exact"] == pytest.approx(100 / 3) and s["all"]["exact_ws"] == pytest.approx(200 / 3)
    assert s["all"]["pass@1"] == pytest.approx(50.0)
    assert add.edit_sim == 100.0  # "min(xs)" vs "max(xs)": "m" and "(xs)" match, 2 * 5 of 14 chars
    assert big.edit_sim == pytest.approx(100 * 10 / 14) and s["all"]["edit_sim"] < 100.0
    assert s["single_line"]["tasks"] == 2 and s["single_line"]["pass@1"] == 0.0


def test_a_hanging_completion_is_stopped_at_the_timeout():
    task = dict(TOY[0])
    (outcome,) = score([task], [Generation("    while True:\n        pass\n")], timeout=2)
    assert outcome.status == "timeout" and outcome.passed is False


def test_candidate_program_has_no_network():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    port = server.getsockname()[1]
    test = ("def check(candidate):\n    import socket\n    try:\n"
            f"        socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
            "    except OSError:\n        return\n    raise SystemExit('connected to the network')\n")
    try:
        result = run_program(build_program("def f():\n", "    pass\n", "", test, "f"), timeout=30)
    finally:
        server.close()
    assert result.status == "passed", result.detail


def test_main_block_of_a_task_file_does_not_run():
    program = build_program("import sys\n", "", "if __name__ == '__main__':\n    sys.exit(3)\n",
                            "def check(candidate):\n    pass\n", "print")
    assert run_program(program, timeout=30).status == "passed"


def quality_of_given(tmp_path, name: str, tasks: list[dict], answers: dict, timeout: float):
    """`mercury-bench quality --completions` on these tasks and answers: (process, results)."""
    write_tasks(tmp_path / name, tasks)
    given = tmp_path / "completions.jsonl"
    given.write_text("".join(json.dumps({"task_id": k, "completion": v}) + "\n" for k, v in answers.items()))
    out = tmp_path / "q.json"
    proc = subprocess.run([sys.executable, "-m", "mercury_bench.cli", "quality", "--tasks", str(tmp_path / name), "--completions",
                           str(given), "--json", str(out), "--out-dir", str(tmp_path / "results"), "--timeout", str(timeout)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text())


def test_quality_cli_scores_given_completions(tmp_path):
    proc, result = quality_of_given(tmp_path, "toy.jsonl.gz", TOY, ANSWERS, timeout=30)
    assert [t["task_id"] for t in read_tasks(tmp_path / "toy.jsonl.gz")] == [t["task_id"] for t in TOY]
    assert "given completions" in proc.stdout
    summary = result["settings"][0]["summary"]["all"]
    assert summary["pass@1"] == pytest.approx(50.0) and summary["exact_ws"] == pytest.approx(200 / 3, abs=1e-3)
    assert (tmp_path / "results" / "quality.json").exists()


def test_quality_cli_rejects_a_malformed_task_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "a", "prompt": "x"}\n')
    proc = subprocess.run([sys.executable, "-m", "mercury_bench.cli", "quality", "--tasks", str(bad), "--completions", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "bad.jsonl:1: task lacks string field(s) suffix, canonical_solution" in proc.stderr


# The published layout exactly: these six fields and nothing else; the kind is the task-id prefix.
def published(task_id, prompt, canonical, suffix, entry_point, test):
    return {"task_id": task_id, "entry_point": entry_point, "prompt": prompt, "suffix": suffix,
            "canonical_solution": canonical, "test": test}


TOTAL_TEST = "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n"
HUMANEVAL_LAYOUT = [
    published("SingleLineInfilling/Synth/0/L2", "def total(xs):\n    s = 0\n    for x in xs:\n", "        s += x\n",
              "    return s\n", "total", TOTAL_TEST),
    published("SingleLineInfilling/Synth/1/L2", "def total(xs):\n    s = 0\n    for x in xs:\n", "        s += x\n",
              "    return s\n", "total", TOTAL_TEST),
    published("MultiLineInfilling/Synth/2/L1_L2", "def biggest(xs):\n", "    best = xs[0]\n    for x in xs[1:]:\n        best = max(best, x)\n",
              "    return best\n", "biggest", "def check(candidate):\n    assert candidate([3, 9, 2]) == 9\n"),
    published("RandomSpanInfilling/Synth/3/0", "def square(x):\n    return x *", " x\n", "", "square",
              "def check(candidate):\n    assert candidate(3) == 9\n"),
    published("RandomSpanInfillingLight/Synth/4/0", "def countdown(n):\n    while ", "n > 0:\n        n -= 1\n",
              "    return n\n", "countdown", "def check(candidate):\n    assert candidate(3) == 0\n"),
]
GIVEN = {
    "SingleLineInfilling/Synth/0/L2": "        s += x\n",  # right
    "SingleLineInfilling/Synth/1/L2": "        s += x",  # right, but the line break is missing: the editor adds it
    "MultiLineInfilling/Synth/2/L1_L2": "    best = xs[0]\n    for x in xs[1:]:\n        best = max(best, x)\n    return best\n",
    "RandomSpanInfilling/Synth/3/0": " 2\n",  # wrong: fails its test
    "RandomSpanInfillingLight/Synth/4/0": "True:\n        pass\n",  # never ends: timeout
}


def test_published_layout_kinds_come_from_the_task_id_prefix():
    assert [task_kind(t) for t in HUMANEVAL_LAYOUT] == ["single_line", "single_line", "multi_line", "random_span", "random_span"]
    assert task_kind({"task_id": "HumanEval/3"}) == "task"


def test_line_mode_comes_from_the_cursor_not_the_kind():
    # a whole-line gap puts the cursor at column 0 of the line below: the server writes whole lines
    assert editor_request(HUMANEVAL_LAYOUT[0])["single_line"] is False
    mid_line = {"task_id": "SingleLineInfilling/x", "prompt": "print(", "suffix": "x)\n", "canonical_solution": "1, "}
    assert editor_request(mid_line)["single_line"] is True  # code on both sides of the cursor
    assert editor_request(HUMANEVAL_LAYOUT[0])["max_tokens"] == 48 and editor_request(HUMANEVAL_LAYOUT[2])["max_tokens"] == 128


def test_editor_view_cuts_repeats_and_moves_covered_brackets_into_the_middle():
    view = shown_view(GIVEN_TASK := HUMANEVAL_LAYOUT[2], GIVEN[GIVEN_TASK["task_id"]], None)
    assert view.status == "changed" and view.text == GIVEN_TASK["canonical_solution"]  # the suffix's line is cut
    task = {"task_id": "t", "prompt": "print(len(", "suffix": ")\n", "canonical_solution": "xs)"}
    view = shown_view(task, "xs))", 0.9)
    assert view.status == "changed" and view.text == "xs))" and view.task["suffix"] == "\n"
    assert view.task["canonical_solution"] == "xs))"  # prompt + middle + suffix is still the document
    assert shown_view(task, "xs))", 0.1).status == "hidden" and shown_view(task, "  ", 0.9).status == "empty"


def test_quality_cli_scores_the_published_layout_raw_and_as_shown(tmp_path):
    proc, result = quality_of_given(tmp_path, "HumanEval-Synth.jsonl.gz", HUMANEVAL_LAYOUT, GIVEN, timeout=3)
    (setting,) = result["settings"]
    raw, shown = setting["summary"], setting["shown"]
    assert list(raw) == ["single_line", "multi_line", "random_span", "all"]
    # raw: the line without its break runs into the next line (a syntax error); the extra
    # `return best` of the multi-line answer is harmless to the test but not exact
    assert raw["single_line"]["pass@1"] == 50.0 and raw["single_line"]["exact"] == 100.0
    assert raw["multi_line"]["pass@1"] == 100.0 and raw["multi_line"]["exact"] == 0.0
    assert raw["random_span"]["pass@1"] == 0.0 and raw["random_span"]["timeouts"] == 1
    assert raw["all"]["pass@1"] == pytest.approx(100 * 2 / 5) and raw["all"]["executable"] == 5
    # as shown: the editor ends the line and cuts the repeated `return best`
    assert shown["single_line"]["pass@1"] == 100.0 and shown["single_line"]["changed"] == 50.0
    assert shown["multi_line"]["exact"] == 100.0 and shown["multi_line"]["changed"] == 100.0
    assert shown["all"]["pass@1"] == pytest.approx(100 * 3 / 5) and shown["all"]["hidden"] == 0.0
    raw_loop, shown_loop = (next(o for o in setting[view] if o["task_id"] == "RandomSpanInfillingLight/Synth/4/0")
                            for view in ("outcomes", "shown_outcomes"))
    assert raw_loop["status"] == "timeout" and raw_loop["passed"] is False
    # code on both sides of that cursor (`while |    return n`): the server shows one line only
    assert shown_loop["completion"] == "True:" and shown_loop["status"] == "failed"
    assert "shown" in proc.stdout and "multi_line" in proc.stdout
