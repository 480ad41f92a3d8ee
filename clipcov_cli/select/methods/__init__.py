"""Selection methods, siblings behind one interface (``Selector.select``), and their registry.

The registry maps each ``--method`` name to the module and class that implement it; a method's
module is imported only when the method is used, so ``select --method random`` never imports
ClipCov's compiled kernel (numba, torch), and importing the registry imports no method (nor
numpy): ``--help`` lists ``METHODS`` from here. Adding a method: one module under ``methods/`` and one
line here (see docs/architecture.md).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from clipcov_cli.errors import ClipcovError

if TYPE_CHECKING:  # the registry itself imports nothing heavy: commands/options.py reads METHODS for --help
    from clipcov_cli.select.base import RunSettings, Selector

# --method name -> "module:Class" (in --help order: ClipCov first)
METHODS: dict[str, str] = {
    "clipcov": "clipcov_cli.select.methods.clipcov:ClipCovSelector",
    "random": "clipcov_cli.select.methods.random_:RandomSelector",
    "clip-score": "clipcov_cli.select.methods.clip_score:ClipScoreSelector",
    "semdedup": "clipcov_cli.select.methods.semdedup:SemDeDupSelector",
    "negclip-loss": "clipcov_cli.select.methods.negclip:NegClipLossSelector",
}
RUN_SETTINGS = ("engine", "workers", "ray_address")


def method_class(name: str) -> type[Selector]:
    """The class of the method ``name``, its module imported now."""
    if name not in METHODS:
        raise ClipcovError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(import_module(module), cls)


def make_selector(name: str, run: RunSettings | None = None, **params) -> Selector:
    """Build the method ``name`` with the parameters it takes (others are ignored: a library caller
    may pass one set to several methods; the command refuses them with ``check_options``).
    ``engine`` / ``workers`` / ``ray_address`` among ``params`` are run settings (``run``)."""
    from dataclasses import replace

    from clipcov_cli.select.base import RunSettings

    cls = method_class(name)
    settings = {k: params.pop(k) for k in RUN_SETTINGS if k in params}
    run = replace(run or RunSettings(), **{k: v for k, v in settings.items() if v is not None or k != "engine"})
    own = set(cls.parameter_names())
    kwargs = {k: v for k, v in params.items() if k in own and v is not None}
    if "run" in {f for f in getattr(cls, "__dataclass_fields__", {})}:
        kwargs["run"] = run
    return cls(**kwargs)


def __getattr__(name: str):
    """``from clipcov_cli.select.methods import ClipCovSelector`` (and the other classes) still works,
    importing that method's module only."""
    for spec in METHODS.values():
        if spec.endswith(":" + name):
            module, cls = spec.split(":")
            return getattr(import_module(module), cls)
    raise AttributeError(name)
