"""Budget parsing: ``300k``, ``1.5M``, ``300000``, ``1e3`` or ``10%``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from clipcov_cli.errors import ClipcovError

_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000, "g": 1_000_000_000}
_RE = re.compile(r"^\s*((?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([kKmMbBgG%]?)\s*$")


@dataclass(frozen=True)
class Budget:
    """A budget as the user wrote it: a count, or a fraction of the corpus."""

    text: str
    count: int | None = None
    fraction: float | None = None

    def resolve(self, n: int) -> int:
        """The number of examples to select from a corpus of ``n`` (usable) examples."""
        if self.fraction is not None:
            b = int(math.floor(self.fraction * n + 1e-9))
        else:
            assert self.count is not None
            b = self.count
        if b <= 0:
            raise ClipcovError(f"budget {self.text!r} selects no example from a corpus of {n}")
        if b > n:
            raise ClipcovError(f"budget {self.text!r} ({b}) is larger than the corpus ({n} usable examples)")
        return b


def parse_budget(text: str) -> Budget:
    """Parse ``300k``, ``1.5M``, ``300000``, ``1e3`` or ``10%`` into a :class:`Budget`."""
    m = _RE.match(str(text))
    if not m:
        raise ClipcovError(f"cannot read budget {text!r}: use a count (300k, 1.5M, 300000, 1e3) or a fraction (10%)")
    value, suffix = float(m.group(1)), m.group(2).lower()
    if suffix == "%":
        if not 0 < value <= 100:
            raise ClipcovError(f"budget {text!r}: a fraction must be in (0%, 100%]")
        return Budget(text=text, fraction=value / 100.0)
    count = value * _SUFFIX[suffix]
    if count != int(count):
        raise ClipcovError(f"budget {text!r} is not a whole number of examples")
    if count <= 0:
        raise ClipcovError(f"budget {text!r} must be positive")
    return Budget(text=text, count=int(count))
