"""``Frozen``: the frozen ``msgspec.Struct`` base of the engine's value types that carry a
cache slot or a field their equality ignores.

A field whose name starts with ``_`` is a cache (a record's or a message's encoded
bytes, filled once with ``msgspec.structs.force_setattr``): it is not compared,
hashed or shown, as a dataclass field with ``compare=False, repr=False`` was not.
A subclass names in ``_not_compared`` the other fields its equality ignores.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

__all__ = ["Frozen"]


class Frozen(msgspec.Struct, frozen=True):
    """Equality, hash and repr over the fields that are not caches (see the module)."""

    _not_compared: ClassVar[tuple[str, ...]] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        shown = (name for name in self.__struct_fields__ if not name.startswith("_"))
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{type(self).__name__}({fields})"

    def _compared(self) -> tuple[Any, ...]:
        skipped = self._not_compared
        return tuple(
            getattr(self, name)
            for name in self.__struct_fields__
            if not name.startswith("_") and name not in skipped
        )
