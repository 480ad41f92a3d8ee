"""Free-space checks before a temporary file is filled (a memory-mapped write to a full disk is a
SIGBUS, not an exception; a plain write half-way is an error after minutes of work)."""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

from clipcov_cli.errors import ClipcovError

HEADROOM = 256 << 20  # bytes left free beyond the file itself


def _advice(directory: Path) -> str:
    return f"free space in {directory} or set TMPDIR to a folder on a larger disk"


def require_free_space(directory: str | Path | None, nbytes: int, what: str) -> None:
    """Raise a one-line ClipcovError unless ``directory`` (default: the temporary folder) has room for
    ``nbytes`` more bytes plus a little headroom."""
    directory = Path(directory or tempfile.gettempdir())
    free = shutil.disk_usage(directory).free
    if free < nbytes + HEADROOM:
        raise ClipcovError(f"not enough disk space for {what}: it needs {nbytes / 1e9:.1f} GB, "
                           f"{directory} has {free / 1e9:.1f} GB free; {_advice(directory)}")


def out_of_space(exc: OSError, directory: str | Path, what: str) -> ClipcovError | None:
    """The one-line error for a write that ran out of space (ENOSPC, EDQUOT), else None."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ClipcovError(f"the disk filled up while writing {what} in {directory}; {_advice(Path(directory))}")
    return None


def low_space_note(path: str | Path, below: int = 1 << 30) -> str:
    """A hint to append to an error line, for failures that do not say ENOSPC: '; its disk has only
    N MB free' where the disk holding ``path`` (or its nearest existing folder) has less than
    ``below`` bytes free, else ''."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    return f"; its disk has only {free / 1e6:.0f} MB free" if free < below else ""
