"""Field types shared by the API schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field


def unstorable(value: str) -> str | None:
    """Why PostgreSQL (through psycopg) cannot take ``value`` as text, or None if it can:
    a NUL character, or a lone surrogate (not encodable as UTF-8)."""
    if "\x00" in value:
        return "NUL characters are not allowed"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "lone surrogate characters are not allowed"
    return None


def _no_nul(value: str) -> str:
    problem = unstorable(value)
    if problem is not None:
        raise ValueError(problem)
    return value


#: Largest id a JSON body may carry: FastAPI writes the bounds of body fields into OpenAPI as
#: floats, so 2**63 - 1 would be documented as 2**63 (and JavaScript clients cannot hold ids
#: past 2**53 exactly anyway).
MAX_JSON_ID = 2**53 - 1

#: Text without NUL characters (PostgreSQL cannot store them), as a JSON Schema ``pattern`` so
#: that it is documented and a ``Field(pattern=...)`` or other constraint added on top stays in
#: the schema (a validator function would hide them). A pattern given on top replaces this one:
#: request bodies, query strings and paths are checked as a whole (NUL, invalid UTF-8, lone
#: surrogates) by ``serving.middleware.InputHygieneMiddleware`` before any route runs.
Text = Annotated[str, Field(pattern=r"^[^\x00]*$")]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Email = Annotated[
    str,
    Field(
        min_length=3,
        max_length=320,
        # No ``\s``: it is a different set in Rust (pydantic), Python and ECMA-262 regexes.
        pattern=r"^[^@ \x00-\x1f\x7f-\x9f]{1,64}@[^@ \x00-\x1f\x7f-\x9f]{1,255}$",
        examples=["ada@example.com"],
    ),
]
Password = Annotated[str, Field(min_length=8, max_length=1024), AfterValidator(_no_nul)]
