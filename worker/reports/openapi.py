"""The receiver's HTTP interface as an OpenAPI 3.0 document: what the property-based tests
generate requests from and check answers against. It is not served (nothing to show the
internet); `python -m worker.reports.openapi` prints it.
"""

from __future__ import annotations

import json
from typing import Any

from worker.reports.app import CALLBACK_PATH, HEALTH_PATH
from worker.reports.parsing import MAX_TEXT

REPORT: dict[str, Any] = {
    "type": "object",
    "required": ["trackingId", "status"],
    "properties": {
        "trackingId": {"type": "string", "pattern": "^[0-9A-Za-z-]{1,64}$"},
        "status": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,39}$"},
        "doneAt": {"type": "string", "nullable": True, "format": "date-time"},
        "recipient": {"type": "string", "maxLength": MAX_TEXT},
        "clientMessageId": {"type": "string", "maxLength": MAX_TEXT},
    },
    "additionalProperties": True,
}
ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
COUNT = {"type": "integer", "minimum": 0}
ANSWER: dict[str, Any] = {
    "type": "object",
    "required": ["received", "stored", "repeats", "matched", "unmatched", "rejected", "reasons"],
    "properties": {
        **{
            name: COUNT
            for name in ("received", "stored", "repeats", "matched", "unmatched", "rejected")
        },
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


SCHEMA: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "wiraya-outbox delivery-report receiver", "version": "1"},
    "components": {
        "securitySchemes": {"wiraya": {"type": "http", "scheme": "basic"}},
        "schemas": {"Report": REPORT},
    },
    "paths": {
        CALLBACK_PATH: {
            "post": {
                "summary": "Wiraya's communication callbacks: one report or an array of them",
                "security": [{"wiraya": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/Report"},
                                    {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Report"},
                                    },
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(ANSWER, "stored; malformed reports refused one by one"),
                    "400": _json(ERROR, "not JSON, not reports, or no well-formed report"),
                    "401": _json(ERROR, "missing or wrong login"),
                    "413": _json(ERROR, "the body exceeds OUTBOX_CALLBACK_MAX_BODY_BYTES"),
                    "503": _json(ERROR, "the database cannot be reached: nothing stored"),
                },
            }
        },
        HEALTH_PATH: {
            "get": {
                "summary": "Whether the database can be read",
                "responses": {
                    "200": {"description": "up", "content": {"application/json": {}}},
                    "503": {"description": "down", "content": {"application/json": {}}},
                },
            }
        },
    },
}

if __name__ == "__main__":
    print(json.dumps(SCHEMA, indent=2))
