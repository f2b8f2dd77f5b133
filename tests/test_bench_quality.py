"""mercury-bench quality scoring: exact match, whitespace-normalised match, pass@1 by execution."""

import json
import socket
import subprocess
import sys
import threading

import pytest

from mercury_bench.execution import build_program, run_program
from mercury_bench.quality import Generation, score, summarize
from mercury_bench.taskfile import read_tasks, write_tasks

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


def test_quality_cli_scores_given_completions(tmp_path):
    tasks = tmp_path / "toy.jsonl.gz"
    write_tasks(tasks, TOY)
    assert [t["task_id"] for t in read_tasks(tasks)] == [t["task_id"] for t in TOY]
    given = tmp_path / "completions.jsonl"
    given.write_text("".join(json.dumps({"task_id": k, "completion": v}) + "\n" for k, v in ANSWERS.items()))
    out = tmp_path / "q.json"
    proc = subprocess.run([sys.executable, "-m", "mercury_bench.cli", "quality", "--tasks", str(tasks), "--completions",
                           str(given), "--json", str(out), "--out-dir", str(tmp_path / "results"), "--timeout", "30"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "given completions" in proc.stdout
    result = json.loads(out.read_text())
    summary = result["settings"][0]["summary"]["all"]
    assert summary["pass@1"] == pytest.approx(50.0) and summary["exact_ws"] == pytest.approx(200 / 3)
    assert (tmp_path / "results" / "quality.json").exists()


def test_quality_cli_rejects_a_malformed_task_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "a", "prompt": "x"}\n')
    proc = subprocess.run([sys.executable, "-m", "mercury_bench.cli", "quality", "--tasks", str(bad), "--completions", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "bad.jsonl:1: task lacks string field(s) suffix, canonical_solution" in proc.stderr
