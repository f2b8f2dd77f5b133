"""`mercury-bench kernels` on this machine: without a GPU it times the torch references on the
CPU, says the GPU figures are missing, and the step loop settles every canvas."""

import json

import pytest
import torch

from mercury_bench.kernels import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU run is tests/test_kernels_gpu.py")
def test_cpu_run_reports_torch_figures_and_the_missing_gpu(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    assert main(["--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "GPU figures missing" in printed and "step loop" in printed
    report = json.loads(out.read_text())
    assert report["backend"] == "torch" and report["device"] == "cpu"
    assert "GPU figures missing" in report["missing"]
    ops = {r["op"] for r in report["results"]}
    assert ops == {"confidence", "commit", "add_rmsnorm", "rope_qk", "step loop"}
    for r in report["results"]:
        assert r["ms"]["torch"] >= 0 and "kernel" not in r["ms"] and r["speedup"] is None
    loop = next(r for r in report["results"] if r["op"] == "step loop")
    assert 1 <= loop["steps"] <= 8 and loop["same_tokens"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_request_without_gpu_is_a_clear_error(capsys):
    assert main(["--quick", "--device", "cuda"]) == 2
    assert "NVIDIA GPU" in capsys.readouterr().err
