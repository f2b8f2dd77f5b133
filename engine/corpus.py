"""Training corpus: permissively licensed Python source found offline, deduplicated, split by file.

Default source: the running interpreter's standard library, its tests included (PSF licence).
`--packages` adds the Python packages installed beside it whose metadata names a permissive
licence (MIT, BSD, Apache, PSF, ...; anything copyleft or unknown is left out), each recorded
with its version and licence. `--data PATHS` adds a user's own repositories. The held-out split is fixed by a hash of each
file's path relative to its root, so it never changes between runs and training never sees it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import sys
import sysconfig
from pathlib import Path

import numpy as np

MAX_FILE_BYTES = 400_000
HELDOUT_PERCENT = 3
PERMISSIVE = re.compile(r"\b(MIT|BSD|Apache|PSF|Python Software Foundation|ISC|Zlib|0BSD|CC0|Unlicense|HPND|BSL-1\.0)", re.I)
COPYLEFT = re.compile(r"GPL|MPL|EPL|CDDL|EUPL|OSL-|CC-BY-SA|proprietary|commercial", re.I)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_python_files(root: Path):
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "site-packages" in rel or "dist-packages" in rel or not path.is_file():
            continue
        yield path, rel


def licence_of(metadata) -> str:
    """The licence a distribution's metadata declares: the SPDX expression, else the short
    License field, else its License classifiers."""
    if expr := metadata.get("License-Expression"):
        return expr.strip()
    field = (metadata.get("License") or "").strip()
    classifiers = [c.split("::")[-1].strip() for c in metadata.get_all("Classifier") or [] if c.startswith("License ::")]
    parts = ([field] if field and "\n" not in field and len(field) <= 80 else []) + classifiers
    return "; ".join(parts)


def is_permissive(licence: str) -> bool:
    return bool(PERMISSIVE.search(licence)) and not COPYLEFT.search(licence)


def package_sources(exclude: tuple[str, ...] = ("mercury-lsp",)) -> list[dict]:
    """Installed distributions with a permissive licence and Python files, largest name first."""
    out, seen = [], set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name.lower() in seen or name.lower() in exclude:
            continue
        seen.add(name.lower())
        licence = licence_of(dist.metadata)
        files = [f for f in dist.files or [] if f.suffix == ".py" and ".." not in f.parts]
        if files and is_permissive(licence):
            out.append({"name": f"pkg:{name}", "version": dist.version, "licence": licence,
                        "files": [(Path(dist.locate_file(f)), f.as_posix()) for f in files]})
    return sorted(out, key=lambda src: src["name"].lower())


def is_heldout(source: str, rel: str) -> bool:
    h = hashlib.sha1(f"{source}:{rel}".encode()).digest()
    return int.from_bytes(h[:4], "little") % 100 < HELDOUT_PERCENT


def collect(roots: list[tuple[str, Path]], packages: list[dict] = ()) -> dict:
    """Read, filter and deduplicate files; returns the manifest with train/heldout file lists."""
    seen: set[str] = set()
    files = {"train": [], "heldout": []}
    skipped = {"unreadable": 0, "too_big": 0, "too_small": 0, "duplicate": 0}
    listed = [(source, iter_python_files(root)) for source, root in roots] + [(p["name"], p["files"]) for p in packages]
    for source, entries in listed:
        for path, rel in entries:
            try:
                raw = path.read_bytes()
                text = raw.decode("utf-8")
            except (OSError, UnicodeDecodeError):
                skipped["unreadable"] += 1
                continue
            if len(raw) > MAX_FILE_BYTES:
                skipped["too_big"] += 1
                continue
            if len(text.strip()) < 64:
                skipped["too_small"] += 1
                continue
            key = hashlib.sha1("\n".join(l.rstrip() for l in text.splitlines()).encode()).hexdigest()
            if key in seen:
                skipped["duplicate"] += 1
                continue
            seen.add(key)
            split = "heldout" if is_heldout(source, rel) else "train"
            files[split].append({"path": str(path), "source": source, "rel": rel, "bytes": len(raw)})
    licences = {"stdlib": "PSF-2.0 (Python " + sys.version.split()[0] + " standard library)"}
    licences.update({p["name"]: f"{p['licence']} (version {p['version']})" for p in packages})
    return {
        "sources": [{"name": s, "root": str(r)} for s, r in roots] + [{"name": p["name"], "version": p["version"]} for p in packages],
        "licences": licences,
        "heldout_percent": HELDOUT_PERCENT,
        "skipped": skipped,
        "counts": {k: len(v) for k, v in files.items()},
        "bytes": {k: sum(f["bytes"] for f in v) for k, v in files.items()},
        "files": files,
    }


def read_texts(entries: list[dict]):
    for e in entries:
        yield Path(e["path"]).read_text(encoding="utf-8")


def tokenize_split(tokenizer, entries: list[dict], out_path: Path) -> int:
    """Concatenate the files' token ids (uint16) with a blank-line separator; returns token count."""
    sep = tokenizer.encode("\n\n")
    chunks = []
    batch: list[str] = []
    for text in read_texts(entries):
        batch.append(text)
        if len(batch) == 64:
            chunks.extend(ids + sep for ids in tokenizer.encode_batch(batch))
            batch = []
    if batch:
        chunks.extend(ids + sep for ids in tokenizer.encode_batch(batch))
    arr = np.fromiter((i for c in chunks for i in c), dtype=np.uint16)
    arr.tofile(out_path)
    return int(arr.size)


def prepare(data_dir: str | Path, extra: list[str] = (), vocab_size: int = 8192, packages: bool = False,
            stdlib: bool = True) -> dict:
    """Build data_dir/{manifest.json, tokenizer.json, train.bin, heldout.bin}; reuse what exists.
    `stdlib` False: only the `extra` folders (adapting a model to one repository, whose own
    held-out files then measure it)."""
    from .tokenizer import Tokenizer, train_tokenizer

    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    manifest_path = data / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        for flag, built, asked in (("--packages", manifest.get("packages", False), packages),
                                   ("--no-stdlib", not manifest.get("stdlib", True), not stdlib)):
            if built != asked:
                raise SystemExit(f"{data} was prepared {'with' if built else 'without'} {flag}; give another --data-dir")
        return manifest
    if not stdlib and not extra:
        raise SystemExit("--no-stdlib leaves no corpus: name your folders with --data")
    roots = ([("stdlib", stdlib_root())] if stdlib else []) + [(f"user:{Path(p).name}", Path(p).resolve()) for p in extra]
    manifest = collect(roots, package_sources() if packages else [])
    manifest["packages"], manifest["stdlib"] = packages, stdlib
    if not (data / "tokenizer.json").exists():
        train_tokenizer(read_texts(manifest["files"]["train"]), vocab_size, data / "tokenizer.json")
    tok = Tokenizer(data / "tokenizer.json", 0, 1, 2)
    manifest["tokens"] = {
        split: tokenize_split(tok, manifest["files"][split], data / f"{split}.bin") for split in ("train", "heldout")
    }
    manifest["vocab_size"] = tok.vocab_size
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
