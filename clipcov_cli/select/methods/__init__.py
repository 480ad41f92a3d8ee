"""Selection methods, siblings behind one interface (``Selector.select``), and their registry."""

from __future__ import annotations

from clipcov_cli.errors import ClipcovError
from clipcov_cli.select.base import Selector
from clipcov_cli.select.methods.clip_score import ClipScoreSelector
from clipcov_cli.select.methods.clipcov import ClipCovSelector
from clipcov_cli.select.methods.negclip import NegClipLossSelector
from clipcov_cli.select.methods.random_ import RandomSelector
from clipcov_cli.select.methods.semdedup import SemDeDupSelector

METHODS: dict[str, type[Selector]] = {
    cls.name: cls for cls in (ClipCovSelector, RandomSelector, ClipScoreSelector, SemDeDupSelector, NegClipLossSelector)
}


def make_selector(name: str, **params) -> Selector:
    """Build the method ``name`` with the parameters it takes (others are ignored)."""
    import dataclasses

    if name not in METHODS:
        raise ClipcovError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    cls = METHODS[name]
    fields = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "notes"}
    return cls(**{k: v for k, v in params.items() if k in fields and v is not None})
