"""mercury-bench latency and throughput end to end: a real mercury-lsp process and a real engine."""

import json
import subprocess
import sys

from mercury_bench.taskfile import write_tasks

TASKS = [
    {"task_id": "t/0", "kind": "single_line", "prompt": "import os\n\n\ndef home():\n    return os.", "suffix": "\n",
     "canonical_solution": "path.expanduser('~')"},
    {"task_id": "t/1", "kind": "single_line", "prompt": "values = [1, 2, 3]\ntotal = ", "suffix": "\nprint(total)\n",
     "canonical_solution": "sum(values)"},
]


def run_bench(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "mercury_bench.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_latency_drives_a_real_language_server(engine, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    write_tasks(tasks, TASKS)
    out = tmp_path / "latency.json"
    proc = run_bench("latency", "--socket", str(engine), "--tasks", str(tasks), "--requests", "3", "--keystrokes", "2",
                     "--warmup", "1", "--pause-ms", "0", "--json", str(out), "--out-dir", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr
    assert "keystroke -> suggestion" in proc.stdout
    result = json.loads(out.read_text())
    assert result["requests"] == 3 and len(result["latencies_ms"]) == 3
    assert all(ms > 0 for ms in result["latencies_ms"])
    assert 0.0 <= result["inside_budget"] <= 1.0
    lsp = result["language_server"]
    assert lsp["requests"] == 4  # warm-up included: the server saw every keystroke's request
    assert lsp["engine_calls"] >= 1 and result["engine"]["requests"] >= 1  # reached the engine over its socket
    assert (tmp_path / "results" / "latency.json").exists()


def test_throughput_runs_concurrent_clients(engine, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    write_tasks(tasks, TASKS)
    out = tmp_path / "throughput.json"
    proc = run_bench("throughput", "--socket", str(engine), "--tasks", str(tasks), "--clients", "2", "--seconds", "1",
                     "--max-tokens", "4", "--budget-ms", "5000", "--json", str(out), "--out-dir", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr
    levels = json.loads(out.read_text())["levels"]
    assert [row["clients"] for row in levels] == [1, 2]
    for row in levels:
        assert row["requests"] >= 1 and row["errors"] == 0
        assert row["requests_per_s"] > 0 and row["tokens_per_s"] >= 0


def test_latency_reports_a_missing_engine_clearly(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    write_tasks(tasks, TASKS)
    proc = run_bench("latency", "--socket", str(tmp_path / "nothing.sock"), "--tasks", str(tasks), "--requests", "1",
                     "--out-dir", str(tmp_path))
    assert proc.returncode != 0
    assert "no engine answers" in proc.stderr


def test_edits_times_keystrokes_in_a_big_document_through_a_real_server(tmp_path):
    out = tmp_path / "edits.json"
    proc = run_bench("edits", "--mb", "0.5", "--keystrokes", "5", "--json", str(out), "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["document_mb"] == 0.5 and result["lines"] > 7000
    assert set(result["ms_per_keystroke"]) == {"start", "middle", "end"}
    assert all(ms >= 0 for ms in result["ms_per_keystroke"].values())
