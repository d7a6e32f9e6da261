"""The headers every route module shares, as annotations.

Module level: FastAPI resolves these annotations (strings, with postponed evaluation) in the
namespace of the module that uses them, so each route module imports them from here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

Auth = Annotated[str | None, Header(description="Bearer <API key>")]
Idem = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200,
                             description="required: a retry with the same key and body gets "
                                         "the first answer; another body is 409")]
OptIdem = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200,
                                       description="makes a retry safe")]
