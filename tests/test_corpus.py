"""Training corpus: licence filtering of installed packages, deduplication, the fixed held-out split."""

import json
from email.message import Message

import pytest

from mercury_engine.corpus import collect, is_heldout, is_permissive, licence_of, package_sources, prepare


@pytest.mark.parametrize("licence, ok", [
    ("MIT", True), ("BSD-3-Clause AND 0BSD AND MIT", True), ("Apache 2.0 License", True),
    ("Python Software Foundation License", True), ("ISC License (ISCL)", True),
    ("MPL-2.0 AND MIT", False), ("GPL-3.0-or-later", False), ("LGPLv3", False), ("", False), ("Proprietary", False),
])
def test_only_permissive_licences_pass(licence, ok):
    assert is_permissive(licence) is ok


def test_licence_comes_from_expression_then_field_then_classifiers():
    m = Message()
    m["License-Expression"] = "Apache-2.0"
    m["License"] = "GPL"
    assert licence_of(m) == "Apache-2.0"
    m = Message()
    m["License"] = "Copyright (c) 2020\nPermission is hereby granted ..."  # a whole licence text: ignored
    m["Classifier"] = "License :: OSI Approved :: BSD License"
    m["Classifier"] = "Programming Language :: Python"
    assert licence_of(m) == "BSD License"


def test_installed_packages_are_filtered_by_licence():
    sources = {s["name"]: s for s in package_sources()}
    assert "pkg:pygls" in sources  # Apache-2.0, a dependency of the language server
    assert "pkg:mercury-lsp" not in sources  # never this project's own code
    for src in sources.values():
        assert is_permissive(src["licence"]) and src["version"]
        assert all(rel.endswith(".py") for _, rel in src["files"])
    pygls = sources["pkg:pygls"]
    assert any(rel.startswith("pygls/") for _, rel in pygls["files"])
    assert all(path.is_file() for path, _ in pygls["files"][:20])


def test_collect_deduplicates_and_splits_by_path(tmp_path):
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    body = "def f(x):\n    return x + 1\n" * 5
    (root / "pkg" / "a.py").write_text(body)
    (root / "pkg" / "b.py").write_text(body.replace("\n", "   \n"))  # same code, trailing spaces
    (root / "pkg" / "tiny.py").write_text("x = 1\n")
    (root / "pkg" / "notes.txt").write_text(body)
    manifest = collect([("user:repo", root)])
    assert manifest["skipped"]["duplicate"] == 1 and manifest["skipped"]["too_small"] == 1
    kept = manifest["files"]["train"] + manifest["files"]["heldout"]
    assert [f["rel"] for f in kept] == ["pkg/a.py"]
    split = "heldout" if is_heldout("user:repo", "pkg/a.py") else "train"
    assert manifest["files"][split][0]["rel"] == "pkg/a.py"
    assert collect([("user:repo", root)])["files"] == manifest["files"]  # the split never moves


def test_a_data_dir_is_not_reused_with_other_sources(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"train": [], "heldout": []}}))
    assert prepare(tmp_path)["files"]["train"] == []
    with pytest.raises(SystemExit, match="without --packages"):
        prepare(tmp_path, packages=True)
    with pytest.raises(SystemExit, match="without --no-stdlib"):
        prepare(tmp_path, stdlib=False)


def test_no_stdlib_builds_a_corpus_of_the_given_folders_alone(tmp_path):
    import sysconfig
    from pathlib import Path

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("textwrap.py", "string.py", "bisect.py", "heapq.py", "fnmatch.py", "glob.py"):
        (repo / name).write_text((stdlib / name).read_text(encoding="utf-8"))
    with pytest.raises(SystemExit, match="--data"):
        prepare(tmp_path / "none", stdlib=False)
    manifest = prepare(tmp_path / "data", [str(repo)], vocab_size=300, stdlib=False)
    files = manifest["files"]["train"] + manifest["files"]["heldout"]
    assert len(files) == 6 and {f["source"] for f in files} == {"user:repo"}
    assert manifest["stdlib"] is False and manifest["tokens"]["train"] > 1000
    with pytest.raises(SystemExit, match="with --no-stdlib"):
        prepare(tmp_path / "data", [str(repo)])
