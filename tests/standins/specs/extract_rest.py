"""Extract the few PagerDuty REST v2 operations the stand-in serves into a small spec.

The full REST spec (PagerDuty/api-schema ``reference/REST/openapiv3.json``) is
2.7 MB; the stand-in needs four operations.  This script writes
``rest-v2-subset.json`` next to itself::

    {"source": ..., "operations": {operationId: {
        "method", "path",
        "parameters": [{"name", "in", "required", "schema"}],
        "requestBody": <schema> | null,
        "responses": {"<status>": <schema> | null}}}}

Every ``$ref`` is inlined; a reference that recurses into itself is replaced by
``{}`` (accept anything) at the point of recursion.  Documentation-only keys
(description, example(s), x-*) are dropped.  OpenAPI 3.0 keywords such as
``nullable`` are kept as-is; ``tests/standins/openapi.py`` converts them when
validating.

Usage: python tests/standins/specs/extract_rest.py [path/to/rest-v2.openapi.json]
"""

import json
import sys
from pathlib import Path

SOURCE = "/work/shared/pagerduty-openapi/rest-v2.openapi.json"
OUT = Path(__file__).with_name("rest-v2-subset.json")
OPERATIONS = [  # (method, path) served by PagerDutyStandIn
    ("get", "/oncalls"),
    ("get", "/incidents"),
    ("put", "/incidents/{id}"),
    ("post", "/incidents/{id}/notes"),
]
DROP = {"description", "example", "examples", "summary", "externalDocs"}


def _pointer(doc, ref):
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def inline(doc, node, seen=()):
    """Return ``node`` with every $ref replaced by its (recursively inlined) target."""
    if isinstance(node, list):
        return [inline(doc, n, seen) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        return {} if ref in seen else inline(doc, _pointer(doc, ref), seen + (ref,))
    out = {}
    for key, value in node.items():
        if key == "properties":  # keys are property names, not keywords
            out[key] = {p: inline(doc, s, seen) for p, s in value.items()}
        elif key not in DROP and not key.startswith("x-"):
            out[key] = inline(doc, value, seen)
    return out


def _json_schema(content):
    return (content or {}).get("application/json", {}).get("schema")


def extract(doc):
    ops = {}
    for method, path in OPERATIONS:
        op = inline(doc, doc["paths"][path][method])
        ops[op["operationId"]] = {
            "method": method.upper(),
            "path": path,
            "parameters": [
                {k: p[k] for k in ("name", "in", "required", "schema") if k in p}
                for p in op.get("parameters", [])
            ],
            "requestBody": _json_schema(op.get("requestBody", {}).get("content")),
            "responses": {
                status: _json_schema(resp.get("content"))
                for status, resp in op["responses"].items()
            },
        }
    return {"source": "PagerDuty/api-schema reference/REST/openapiv3.json "
                      f"(info.version {doc['info']['version']})",
            "operations": ops}


if __name__ == "__main__":
    doc = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else SOURCE).read_text())
    OUT.write_text(json.dumps(extract(doc), sort_keys=True, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
