"""mercury-bench decode and quality with real (tiny, random) models: the diffusion Sampler at two
thresholds and the autoregressive baseline, in process, through the command line."""

import json
import subprocess
import sys

import pytest
from test_autoregressive import tiny_model_dir as tiny_causal_model_dir

from mercury_bench.decode import headline
from mercury_bench.taskfile import write_tasks

TASKS = [
    {"task_id": "d/0", "kind": "single_line", "prompt": "def add(a, b):\n    return ", "suffix": "\n", "canonical_solution": "a + b"},
    {"task_id": "d/1", "kind": "multi_line", "prompt": "def first(xs):\n", "suffix": "\n",
     "canonical_solution": "    return xs[0]\n", "entry_point": "first",
     "test": "def check(candidate):\n    assert candidate([4, 5]) == 4\n"},
]


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("decode") / "tasks.jsonl"
    write_tasks(path, TASKS)
    return path


def bench(*args):
    return subprocess.run([sys.executable, "-m", "mercury_bench.cli", *args], capture_output=True, text=True, timeout=300)


def test_decode_frontier_against_one_token_per_step_and_autoregressive(tiny_model_dir, task_file, tmp_path):
    ar_dir = tiny_causal_model_dir(tmp_path)
    out = tmp_path / "decode.json"
    proc = bench("decode", "--model", str(tiny_model_dir), "--ar-model", str(ar_dir), "--device", "cpu", "--tasks", str(task_file),
                 "--thresholds", "0.000001,1.01", "--max-tokens", "6", "--json", str(out), "--out-dir", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    by_label = {s["label"]: s["summary"]["all"] for s in result["settings"]}
    assert set(by_label) == {"threshold 1e-06", "one token/step", "autoregressive"}
    for m in by_label.values():
        assert m["tasks"] == 2 and 0 <= m["exact"] <= 100
    # a threshold below every confidence commits the whole canvas in the first forward of each
    # task (d/0 ends in a space that token healing gives back: any token starting with a space
    # writes it again, so that costs no forward)
    assert by_label["threshold 1e-06"]["forwards"] == 2
    one = by_label["one token/step"]
    assert one["forwards"] >= max(2, one["tokens"])
    ar = by_label["autoregressive"]
    assert ar["tokens"] <= ar["forwards"] <= ar["tokens"] + 2  # one forward per token, plus the end
    assert "vs_autoregressive" in result["headline"] and "best_within_1pt" in result["headline"]
    assert "one token/step" in proc.stdout and "autoregressive" in proc.stdout
    # what a confidence gate would show: everything at 0, nothing above any confidence
    confidences = [o["confidence"] for o in result["settings"][0]["outcomes"]]
    gates = {g["min_confidence"]: g for g in result["settings"][0]["confidence_gate"]}
    assert all(0 <= c <= 1 for c in confidences)
    assert gates[0.0]["shown"] == 2 and all(g["shown"] + g["hidden"] == 2 for g in gates.values())
    assert [g["shown"] for g in gates.values()] == [sum(c >= gate for c in confidences) for gate in gates]
    assert "minConfidence" in proc.stdout


def test_decode_ablates_the_copy_prior_in_the_same_run(tiny_model_dir, task_file, tmp_path):
    out = tmp_path / "decode.json"
    proc = bench("decode", "--model", str(tiny_model_dir), "--device", "cpu", "--tasks", str(task_file),
                 "--thresholds", "0.9,1.01", "--max-tokens", "6", "--ablate-copy-prior", "--json", str(out),
                 "--out-dir", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    labels = {s["label"]: s["copy_prior"] for s in result["settings"]}
    assert labels == {"threshold 0.9": True, "one token/step": True,
                      "threshold 0.9, no copy prior": False, "one token/step, no copy prior": False}
    # the headline compares settings that use the prior (the product's decoder) only
    assert result["headline"]["best_within_1pt"]["label"] in ("threshold 0.9", "one token/step")
    assert "no copy prior" in proc.stdout


def test_quality_runs_a_model_and_the_baseline_side_by_side(tiny_model_dir, task_file, tmp_path):
    ar_dir = tiny_causal_model_dir(tmp_path)
    out = tmp_path / "quality.json"
    proc = bench("quality", "--model", str(tiny_model_dir), "--baseline-ar", str(ar_dir), "--device", "cpu",
                 "--tasks", str(task_file), "--max-tokens", "6", "--timeout", "30", "--json", str(out), "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    settings = json.loads(out.read_text())["settings"]
    assert [s["label"] for s in settings] == ["threshold 0.9", "one token/step", "autoregressive"]
    for s in settings:
        for view in ("summary", "shown"):
            assert list(s[view]) == ["single_line", "multi_line", "all"]
            assert s[view]["all"]["executable"] == 1 and s[view]["multi_line"]["pass@1"] in (0.0, 100.0)
            assert s[view]["all"]["ms_p95"] >= s[view]["all"]["ms_p50"] > 0
        for view in ("outcomes", "shown_outcomes"):
            statuses = {o["task_id"]: o["status"] for o in s[view]}
            assert statuses["d/0"] == "no test" and statuses["d/1"] in ("passed", "failed", "timeout")
        assert sum(s["shown"]["all"][k] for k in ("changed", "removed", "hidden")) <= 100.0
    assert proc.stdout.count(" shown ") >= 9 and "changed %" in proc.stdout  # a raw and a shown row per kind


def test_headline_finds_the_fastest_setting_at_equal_quality():
    def setting(decoder, threshold, exact, tpf, ms):
        return {"decoder": decoder, "threshold": threshold, "label": str(threshold),
                "summary": {"all": {"exact": exact, "tokens_per_forward": tpf, "ms_mean": ms}}}

    settings = [setting("diffusion", 0.5, 30.0, 6.0, 10.0), setting("diffusion", 0.9, 39.5, 3.0, 20.0),
                setting("diffusion", 1.01, 40.0, 1.0, 60.0), setting("autoregressive", None, 40.0, 1.0, 80.0)]
    h = headline(settings)
    assert h["best_within_1pt"]["label"] == "0.9" and h["best_within_1pt"]["tokens_per_forward"] == 3.0
    v = h["vs_autoregressive"]
    assert v["diffusion_label"] == "0.9" and v["equal_quality"] and v["speedup"] == pytest.approx(4.0)
    settings[-1]["summary"]["all"]["exact"] = 90.0  # no diffusion setting comes close
    v = headline(settings)["vs_autoregressive"]
    assert not v["equal_quality"] and v["diffusion_label"] == "1.01"
