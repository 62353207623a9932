"""The one check every JSON document the suite reads is put through: a JSON Schema (result_schema.json for
bench results, compare_schema.json for compare results, state_schema.json for the suite's own state files:
plans, histories, wall times, a checkpoint's plain fields), and one line naming the file and the field when
the document does not fit. A state file may have been edited or damaged by hand; checked here, it can
no longer raise KeyError, TypeError or ZeroDivisionError deeper in."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .errors import UserError
from .userfiles import CONFIG_MAX_BYTES, RESULT_MAX_BYTES, read_user_json

SCHEMA_DIR = Path(__file__).resolve().parent
STATE_SCHEMA = "state_schema.json"


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / name).read_text())


def _where(error) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(top level)"


def schema_errors(doc: object, schema: dict) -> list[str]:
    """'field: why' for every place ``doc`` does not fit ``schema`` (formats checked too), in field order."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(doc), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{_where(e)}: {e.message}" for e in errors]


def check_document(doc: object, schema: dict | Callable[[object], list[str]], where: str | os.PathLike, what: str):
    """The one check of a JSON document: ``doc`` when it fits ``schema`` (a JSON Schema, or a function returning
    'field: why' reasons, empty when it fits), else one UserError naming the file, the document and the first
    field that does not fit: "<file>: invalid <what>: <field>: <why> (and N more)"."""
    reasons = schema(doc) if callable(schema) else schema_errors(doc, schema)
    if reasons:
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        raise UserError(f"{where}: invalid {what}: {reasons[0]}{more}")
    return doc


def check_state(doc: object, kind: str, path: str | os.PathLike, what: str | None = None):
    """``doc`` when it fits state_schema.json's ``kind`` (plan, history, wall, checkpoint), else a one-line
    UserError naming the file and the first field that does not fit."""
    return check_document(doc, {**load_schema(STATE_SCHEMA), "$ref": f"#/$defs/{kind}"}, path, what or kind)


def read_state(path: str | os.PathLike, kind: str, what: str | None = None) -> dict:
    """A state file read with the user-file guards (size cap, strict JSON) and checked against its kind."""
    limit = CONFIG_MAX_BYTES if kind in ("plan", "wall") else RESULT_MAX_BYTES
    return check_state(read_user_json(path, what or kind, limit), kind, path, what)
