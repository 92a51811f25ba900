"""Field types shared by the API schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


#: Text without NUL characters (PostgreSQL cannot store them).
Text = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Email = Annotated[
    str,
    Field(
        min_length=3,
        max_length=320,
        pattern=r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,255}$",
        examples=["ada@example.com"],
    ),
]
Password = Annotated[str, Field(min_length=8, max_length=1024), AfterValidator(_no_nul)]
