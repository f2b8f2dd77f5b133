"""Held-out task building: the four kinds cut as the field cuts them, determinism, and executable
tasks that discriminate."""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

from mercury_bench.execution import build_program, run_program
from mercury_bench.taskfile import read_tasks
from mercury_bench.tasks import KINDS, build_tasks

STDLIB = Path(sysconfig.get_paths()["stdlib"])
PLAIN_FILES = [STDLIB / "textwrap.py", STDLIB / "bisect.py", STDLIB / "heapq.py"]

TESTABLE = '''import unittest


def double(x):
    """Twice x.

    >>> double(2)
    4
    >>> double(-3)
    -6
    """
    y = x * 2
    return y


class DoubleTest(unittest.TestCase):
    def test_double(self):
        value = double(21)
        self.assertEqual(value, 42)
        self.assertEqual(double(0), 0)


if __name__ == "__main__":
    unittest.main()
'''


def quiet(message):
    pass


def test_kinds_are_well_formed_and_deterministic():
    first = build_tasks(PLAIN_FILES, per_kind=15, seed=3, exec_share=0.0, log=quiet)
    again = build_tasks(PLAIN_FILES, per_kind=15, seed=3, exec_share=0.0, log=quiet)
    other = build_tasks(PLAIN_FILES, per_kind=15, seed=4, exec_share=0.0, log=quiet)
    assert first == again and first != other
    sources = {p.name: p.read_text() for p in PLAIN_FILES}
    for kind in KINDS:
        assert len(first[kind]) == 15
        assert len({t["task_id"] for t in first[kind]}) == 15
        for t in first[kind]:
            assert t["kind"] == kind and t["canonical_solution"].strip()
            assert t["prompt"] + t["canonical_solution"] + t["suffix"] in sources[t["source"]]
    for t in first["single_line"]:  # one whole line: column 0 through its line break
        assert t["prompt"].endswith("\n") and t["canonical_solution"].count("\n") == 1
        assert t["canonical_solution"].endswith("\n") and t["canonical_solution"].strip()
    for t in first["multi_line"]:
        assert t["prompt"].endswith("\n") and t["canonical_solution"].endswith("\n")
        assert t["canonical_solution"].count("\n") >= 2
        first_line = t["canonical_solution"].split("\n")[0]
        assert first_line.strip() and not t["canonical_solution"].startswith("\n")
    for t in first["rest_of_line"]:  # the tail of a line after a cursor inside it
        assert "\n" not in t["canonical_solution"] and t["suffix"].startswith("\n")
        assert not t["prompt"].endswith("\n")


def test_multi_line_cuts_include_block_bodies_not_only_functions(tmp_path):
    src = tmp_path / "blocks.py"
    src.write_text("x = 1\nif x:\n    y = 2\n    z = 3\nelse:\n    y = 0\nfor i in range(3):\n    x += i\n    y += i\n")
    tasks = build_tasks([src], per_kind=2, seed=0, exec_share=0.0, log=quiet)["multi_line"]
    assert {t["canonical_solution"] for t in tasks} <= {"    y = 2\n    z = 3\n", "    x += i\n    y += i\n"}
    assert len({t["canonical_solution"] for t in tasks}) == 2


def test_executable_tasks_pass_with_the_original_and_fail_without(tmp_path):
    src = tmp_path / "double.py"
    src.write_text(TESTABLE)
    tasks = build_tasks([src], per_kind=4, seed=0, exec_share=0.5, timeout=30, log=quiet)
    executable = [t for kind in KINDS for t in tasks[kind] if "test" in t]
    assert executable, "the doctested function and the unittest method give executable tasks"
    assert {t["entry_point"] for t in executable} <= {"double", "DoubleTest"}
    task = executable[0]
    assert "__main__" not in task["suffix"]  # the runner's main block is dropped
    program = build_program(task["prompt"], task["canonical_solution"], task["suffix"], task["test"], task["entry_point"])
    assert run_program(program, timeout=30).status == "passed"
    broken = build_program(task["prompt"], "", task["suffix"], task["test"], task["entry_point"])
    assert run_program(broken, timeout=30).status == "failed"


def test_tasks_cli_writes_gzipped_files_and_a_manifest(tmp_path):
    out = tmp_path / "tasks"
    proc = subprocess.run([sys.executable, "-m", "mercury_bench.cli", "tasks", "--out", str(out), "--files",
                           *map(str, PLAIN_FILES), "--per-kind", "5", "--exec-share", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for kind in KINDS:
        assert len(read_tasks(out / f"{kind}.jsonl.gz")) == 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["single_line"]["tasks"] == 5 and manifest["seed"] == 0


def test_tasks_cli_without_files_cuts_the_corpus_held_out_stdlib_files(tmp_path):
    from mercury_engine.corpus import is_heldout

    proc = subprocess.run([sys.executable, "-m", "mercury_bench.cli", "tasks", "--out", str(tmp_path), "--per-kind", "3",
                           "--exec-share", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    sources = {t["source"] for kind in KINDS for t in read_tasks(tmp_path / f"{kind}.jsonl.gz")}
    assert sources and all(is_heldout("stdlib", rel) for rel in sources)
