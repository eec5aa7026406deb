"""Process exit codes shared by every perucast command and step CLI (scripts rely on them)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    DATA_INVALID = 1  # the input data failed validation: see the report
    USAGE = 2  # bad command line (typer/click's own code)
    INPUT_NOT_FOUND = 3  # source, file, revision or table missing or unreadable
