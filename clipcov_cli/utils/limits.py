"""The open-file limit. Every part of an embeddings folder is memory-mapped, and each map holds a file
descriptor: a corpus of a thousand parts (CC12M from `clipcov embed`, 10k rows a part) needs a few
thousand, above the usual default soft limit of 1024."""

from __future__ import annotations

from clipcov_cli.errors import ClipcovError


def ensure_open_files(needed: int, what: str) -> None:
    """Raise this process' soft limit on open files to ``needed`` if it is lower (up to the hard
    limit, which an unprivileged process may do); a one-line ClipcovError if the hard limit is lower."""
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to adjust
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise ClipcovError(f"{what} need about {needed} open files, but this process may open at most {hard}: "
                           f"raise the limit (`ulimit -n {needed}`, or `nofile` in /etc/security/limits.conf)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
