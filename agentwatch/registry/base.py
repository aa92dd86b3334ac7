"""What every model of a registry file shares: strict, frozen, and silent about its input."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

__all__ = ["ENV_NAME", "SLUG", "Strict"]

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Strict(BaseModel):
    # No input in a ValidationError's text: header values and URLs may hold tokens.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)
