"""One parser per kind of command-line value, shared by every subcommand.

Sizes are always height x width (``720x1280``), as tensors are laid out; a single number
is a square. Every parser raises ``UserError`` naming the option, so a typo is one line.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence, TypeVar

from m2ae.errors import UserError

Size = tuple[int, int]
T = TypeVar("T")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?$")


def parse_size(text: str, option: str, square: bool = True) -> Size:
    """``"720x1280"`` -> ``(720, 1280)``; ``"512"`` -> ``(512, 512)`` when ``square``."""
    match = _SIZE_RE.match(text)
    if not match or (match.group(2) is None and not square):
        example = "HEIGHTxWIDTH, for example 720x1280" + (", or one side for a square" if square else "")
        raise UserError(f"{option} {text!r}: expected {example}")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if height <= 0 or width <= 0:
        raise UserError(f"{option} {text!r}: height and width must be positive")
    return height, width


def format_size(size: Sequence[int]) -> str:
    """``(720, 1280)`` -> ``"720x1280"`` (height x width)."""
    return "x".join(str(side) for side in size)


def parse_names(text: str, option: str, choices: Sequence[str] | None = None, unique: bool = True) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped, duplicates removed in order (kept where the
    position counts: ``unique=False``); with ``choices``, every name must be one of them."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    names = tuple(dict.fromkeys(names)) if unique else names
    if not names:
        raise UserError(f"{option}: empty list" + (f"; choose from {', '.join(choices)}" if choices else ""))
    if choices is not None:
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise UserError(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(choices)}")
    return names


def parse_numbers(text: str, option: str, kind: Callable[[str], T] = float, what: str = "a number",
                  unique: bool = True) -> tuple[T, ...]:
    """A comma-separated list of numbers (``kind`` int or float), duplicates removed in order
    unless ``unique=False``."""
    values = []
    for item in parse_names(text, option, unique=unique):
        try:
            values.append(kind(item))
        except ValueError:
            raise UserError(f"{option} {item!r}: not {what}") from None
    return tuple(dict.fromkeys(values)) if unique else tuple(values)
