"""The distributor interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "ray")


class Distributor(ABC):
    """Runs ``fn(item)`` for every item, in any order, and yields ``(position, result)`` pairs as
    they complete. A failing unit raises from the iterator (after the engine's own retries); it is
    never swallowed. Use as a context manager so engine resources are released."""

    name: ClassVar[str]

    @abstractmethod
    def imap_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        """Yield ``(i, fn(items[i]))`` for every i, in completion order."""

    def close(self) -> None:  # pragma: no cover - engines without resources
        return None

    def __enter__(self) -> "Distributor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
