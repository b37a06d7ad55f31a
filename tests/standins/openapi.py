"""Validate JSON documents against OpenAPI 3.0 schema objects with jsonschema."""

import json
from pathlib import Path

import jsonschema

SPECS = Path(__file__).with_name("specs")


def load_spec(name: str) -> dict:
    """Load a JSON spec file from ``tests/standins/specs``."""
    return json.loads((SPECS / name).read_text())


def to_json_schema(node):
    """Translate OpenAPI 3.0 ``nullable: true`` into JSON Schema (recursively).

    Other OpenAPI-only keywords (readOnly, writeOnly, discriminator, xml) are
    ignored by jsonschema; unknown ``format`` values such as ``url`` are not
    checked (no format checker is installed).
    """
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: ({p: to_json_schema(s) for p, s in v.items()} if k == "properties"
               else to_json_schema(v))
           for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        elif "type" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def schema_errors(schema: dict, instance) -> list[str]:
    """Return human-readable validation errors (``[]`` when valid).

    ``schema`` is already JSON Schema (see :func:`to_json_schema`); local
    ``#/...`` references resolve against ``schema`` itself.
    """
    validator = jsonschema.Draft4Validator(schema)
    return sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(instance)
    )
