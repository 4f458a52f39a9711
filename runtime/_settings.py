"""Settings declared once, as dataclass fields: flags, environment names, help and validation.

A setting is a dataclass field made with :func:`setting` (a default and a help
line). From the field alone come the flag (``--name-with-dashes``), the
environment variable (``ACTORFLOW_NAME``), the TOML key, the ``--help`` line, the
row of docs/configuration.md and the validation: raw text or TOML values are
converted to the field's annotated type with msgspec (``Annotated`` constraints
included). Adding a setting is adding one field.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import msgspec

__all__ = ["ENV_PREFIX", "Setting", "SettingError", "convert", "setting", "settings_of"]

ENV_PREFIX = "ACTORFLOW_"


class SettingError(ValueError):
    """A value does not fit its setting; the message says what was expected."""


def setting(
    default: Any,
    help: str,
    *,
    metavar: str = "",
    shown: str = "",
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A dataclass field that is also a daemon setting.

    Args:
        default: the field's default (immutable).
        help: one line for ``--help`` and docs/configuration.md.
        metavar: the flag's value name (default: from the type).
        shown: the default as documented, when it is not the value itself.
        parse: turns a raw text value into what msgspec then validates (sizes).
    """
    metadata = {"help": help, "metavar": metavar, "shown": shown, "parse": parse}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True, slots=True)
class Setting:
    """One setting: a field of a config dataclass with help metadata."""

    name: str
    type: Any
    default: Any
    help: str
    metavar: str
    shown: str
    parse: Callable[[str], Any] | None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def repeatable(self) -> bool:
        return get_origin(_base(self.type)) is tuple

    @property
    def default_text(self) -> str:
        """The default as ``--help`` and the docs show it."""
        if self.shown:
            return self.shown
        value = self.default
        if value is None or value == "":
            return "none"
        if isinstance(value, tuple):
            return " ".join(str(item) for item in value) or "none"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)


def settings_of(cls: type) -> tuple[Setting, ...]:
    """The settings of a config dataclass: its fields made with :func:`setting`."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found = []
    for field in dataclasses.fields(cls):
        if "help" not in field.metadata:
            continue
        meta = field.metadata
        kind = hints[field.name]
        found.append(
            Setting(
                name=field.name,
                type=kind,
                default=field.default,
                help=meta["help"],
                metavar=meta["metavar"] or _metavar(kind),
                shown=meta["shown"],
                parse=meta["parse"],
            )
        )
    return tuple(found)


def _base(kind: Any) -> Any:
    """``kind`` without ``Annotated`` and without ``| None``."""
    if get_origin(kind) is typing.Annotated:
        kind = get_args(kind)[0]
    if get_origin(kind) in (Union, types.UnionType):
        rest = [arg for arg in get_args(kind) if arg is not type(None)]
        if len(rest) == 1:
            return _base(rest[0])
    return kind


def _metavar(kind: Any) -> str:
    base = _base(kind)
    if get_origin(base) is Literal:
        return "|".join(str(arg) for arg in get_args(base))
    if get_origin(base) is tuple:
        base = get_args(base)[0]
    names = {Path: "FILE", int: "N", float: "SECS", bool: "true|false"}
    return names.get(base, "TEXT")


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(f"{kind!r}")


def _describe(exc: msgspec.ValidationError) -> str:
    text = str(exc).replace("`", "").split(" - at ")[0]
    text = re.sub(r", got \w+$", "", text)
    text = re.sub(r"\bint\b", "an integer", re.sub(r"\bfloat\b", "a number", text))
    return text[0].lower() + text[1:] if text else text


def _one(item: Setting, kind: Any, raw: Any) -> Any:
    base = _base(kind)
    if get_origin(base) is Literal and raw not in get_args(base):
        choices = ", ".join(str(arg) for arg in get_args(base))
        raise SettingError(f"{raw!r} is not one of {choices}")
    if isinstance(raw, bool | list | dict) and base is not bool:
        raise SettingError(f"{raw!r} is not a single value")
    if item.parse is not None and isinstance(raw, str):
        try:
            raw = item.parse(raw)
        except ValueError as exc:
            raise SettingError(str(exc)) from None
    try:
        return msgspec.convert(raw, kind, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise SettingError(f"{raw!r} is invalid: {_describe(exc)}") from None


def convert(item: Setting, raw: Any) -> Any:
    """``raw`` (text, or a TOML value) as a valid value of ``item``.

    Raises:
        SettingError: the value does not fit; the message says what was expected.
    """
    if not item.repeatable:
        return _one(item, item.type, raw)
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise SettingError("needs at least one value")
    element = get_args(_base(item.type))[0]
    return tuple(_one(item, element, value) for value in items)
