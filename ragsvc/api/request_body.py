"""The base of every JSON request body of ragsvc's own API (the OpenAI-compatible routes keep OpenAI's lax
reading, as the clients written for it expect).

Unknown fields are refused, so a misspelt option is an error rather than a silent default; and so are values of
the wrong JSON type (`"k": true` or `"k": "5"` for a count, `"stream": "no"` for a flag), which pydantic's lax
mode would take as 1, 5 and False. Integers sent as `5.0` are refused too; a float field takes an integer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
