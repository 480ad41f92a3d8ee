"""The output folder: its file names, who owns it, its lock, and what a resumed run keeps.

    OUT/{shard:05d}.tar        final shards (written atomically)
    OUT/sizes.json             {shard name: count}, open_clip_train's dataset-size file
    OUT/manifest.json          written last: the export is complete
    OUT/.work/plan.json        the request's fingerprint (resume only the same request)
    OUT/.export.lock           held while an export runs (removed when it finishes)
    OUT/.work/src/{stem}.bin   phase 1: the selected samples of one source shard, as records
    OUT/.work/src/{stem}.json  phase 1: their index, written last (the unit's completion marker)
    OUT/.work/out/{n:05d}.json phase 2: a final shard's count and sha256 (its completion marker)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from clipcov_cli.errors import ClipcovError
from clipcov_cli.utils.atomic import write_json
from clipcov_cli.utils.overwrite import Owned, check_replaceable

SHARD_NAME = re.compile(r"\d{5,}\.tar")
_OUR_TEMP = re.compile(r"\.(\d{5,}\.tar|manifest\.json|sizes\.json)\..+\.tmp")


def publish(path: Path) -> None:
    """Give a finished output file the usual permissions (temporary files are created 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _is_export(out: Path) -> bool:
    """``out`` holds an export's manifest, or an interrupted export's plan."""
    if (out / ".work" / "plan.json").is_file():
        return True
    try:
        m = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and ("fingerprint" in m or {"shards", "count"} <= m.keys())


def _export_writes(entry: Path) -> bool:
    name = entry.name
    return bool(SHARD_NAME.fullmatch(name) or _OUR_TEMP.fullmatch(name)) or \
        name in ("manifest.json", "sizes.json", ".work", ".export.lock")


EXPORT_OWNED = Owned("export", "manifest.json", _is_export, _export_writes)


def shard_name(n: int) -> str:
    return f"{n:05d}.tar"


class Layout:
    """The paths of one output folder and the rules for writing into it."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.manifest = out / "manifest.json"
        self.sizes = out / "sizes.json"
        self.work = out / ".work"
        self.src = self.work / "src"
        self.done = self.work / "out"
        self.plan = self.work / "plan.json"
        self.lock = out / ".export.lock"

    def shard(self, n: int) -> Path:
        return self.out / shard_name(n)

    def shard_marker(self, n: int) -> Path:
        return self.done / f"{n:05d}.json"

    def read_manifest(self) -> dict | None:
        if not self.manifest.exists():
            return None
        try:
            data = json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):
            raise ClipcovError(f"{self.manifest} is not an export manifest: choose another --out")
        return data

    def complete(self, fp: str) -> dict | None:
        """The manifest of a finished export of this same request whose shards are all present."""
        m = self.read_manifest()
        if not m or m.get("fingerprint") != fp:
            return None
        for e in m.get("shards", []):
            p = self.out / e["shard"]
            if not p.is_file() or p.stat().st_size != e.get("bytes"):
                return None
        return m

    def check(self, fp: str, dataset_dir: Path, overwrite: bool, subset_dir: Path | None = None) -> None:
        """Refuse an OUT this request may not write into. Writes nothing."""
        if overwrite:  # the rule shared by every command's --overwrite
            check_replaceable(self.out, EXPORT_OWNED, (dataset_dir, subset_dir))
        if self.out.exists() and not self.out.is_dir():
            raise ClipcovError(f"--out {self.out} exists and is not a folder")
        if self.out.resolve() == dataset_dir.resolve():
            raise ClipcovError("--out is the source dataset folder: choose another folder")
        m = self.read_manifest()
        if m is not None and not ("fingerprint" in m or {"shards", "count"} <= m.keys()):
            raise ClipcovError(f"{self.manifest} was not written by clipcov export: choose another --out")
        if m is not None and m.get("fingerprint") != fp and not overwrite:
            raise ClipcovError(f"{self.out} already holds an export of another selection, shard size or source dataset: "
                               "pass --overwrite to replace it, or choose another --out")
        ours = m is not None or self.plan.exists()
        if not ours and self.out.is_dir() and any(self.out.glob("*.tar")):
            raise ClipcovError(f"{self.out} holds .tar files that clipcov export did not write: choose another --out")

    def prepare(self, fp: str) -> None:
        """Under the lock: discard a finished export being redone and the state of an interrupted run
        of another request, remove a killed run's temporaries, make ``.work``."""
        if self.read_manifest() is not None or self._plan_fingerprint() not in (None, fp):
            self.clear()
        self.remove_stale_temporaries()
        self.src.mkdir(parents=True, exist_ok=True)
        self.done.mkdir(parents=True, exist_ok=True)
        if not self.plan.exists():
            write_json(self.plan, {"fingerprint": fp})

    def _plan_fingerprint(self) -> str | None:
        try:
            return json.loads(self.plan.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return None if not self.plan.exists() else ""

    def clear(self) -> None:
        """Remove everything an export writes in OUT (only names it writes)."""
        for p in self.out.iterdir():
            if SHARD_NAME.fullmatch(p.name) or p.name in ("manifest.json", "sizes.json"):
                p.unlink()
        shutil.rmtree(self.work, ignore_errors=True)

    def remove_stale_temporaries(self) -> None:
        """Temporary files of a killed run (atomic writes leave ``.NAME.XXXX.tmp``)."""
        for p in self.out.glob(".*.tmp"):
            if _OUR_TEMP.fullmatch(p.name):
                p.unlink(missing_ok=True)
        for p in self.work.rglob(".*.tmp"):
            p.unlink(missing_ok=True)

    def extra_tars(self, names: set[str]) -> list[str]:
        return sorted(p.name for p in self.out.glob("*.tar") if p.name not in names)

    @contextlib.contextmanager
    def locked(self) -> Iterator[int]:
        """One export at a time per OUT (released by the OS if the process dies); yields the lock's fd."""
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.lock, "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ClipcovError(f"another export is writing {self.out}: wait for it to finish") from None
            yield f.fileno()
