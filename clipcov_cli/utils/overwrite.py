"""What ``--overwrite`` may replace: only a folder the same command wrote, never anything else.

One rule for every command with ``--overwrite`` (select, export, embed). ``--out`` may be replaced
only when it is absent, empty, or a folder the command itself wrote — recognised by its marker file
(the command's manifest) and holding nothing but the names that command writes. Never the input,
never a folder that contains the input, never a file. Each refusal is one ``ClipcovError`` line
(exit 2) and nothing is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from clipcov_cli.errors import ClipcovError


@dataclass(frozen=True)
class Owned:
    """How a command recognises a folder it wrote: ``marked(folder)`` (its manifest is there and is
    the command's) and ``ours(entry)`` for each entry of the folder (a name the command writes)."""

    command: str  # e.g. "select", as the messages name it
    marker: str  # the marker's name, for the messages
    marked: Callable[[Path], bool]
    ours: Callable[[Path], bool]


def _refuse(out: Path, why: str) -> ClipcovError:
    return ClipcovError(f"--overwrite refused: {out} {why}; nothing was changed (choose another --out)")


def check_replaceable(out: Path, owned: Owned, inputs: Iterable[Path | str | None] = ()) -> None:
    """Raise a one-line :class:`ClipcovError` unless ``--overwrite`` may replace ``out``; reads only."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise _refuse(out, "is a file, not a folder")
    where = out.resolve()
    for inp in inputs:
        if inp is None:
            continue
        src = Path(inp).resolve()
        if where == src:
            raise _refuse(out, f"is the input of clipcov {owned.command}")
        if where in src.parents:
            raise _refuse(out, f"contains the input ({inp})")
    entries = list(out.iterdir())
    if not entries:
        return
    if not owned.marked(out):
        raise _refuse(out, f"was not written by clipcov {owned.command} (no {owned.marker} of it)")
    foreign = sorted(p.name for p in entries if not owned.ours(p))
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise _refuse(out, f"holds files clipcov {owned.command} did not write ({', '.join(foreign[:3])}{more})")


def is_temporary(entry: Path) -> bool:
    """A temporary name an atomic write leaves when killed (``.NAME.XXXX.tmp``)."""
    return entry.name.startswith(".") and entry.name.endswith(".tmp")
