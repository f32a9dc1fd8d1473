"""The OpenAPI 3 description of the HTTP API, served at ``/api/openapi.json``.

It states what the routes really answer (tests run schemathesis against a live stack with it):
every status a route can give, the error body, and the headers that matter to a client.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

openapi = Blueprint("openapi", __name__)

FILE_ID = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$", "example": "65f0c0ffee0123456789abcd"}
SHA256 = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
STATUS = {"type": "string", "enum": ["queued", "processing", "stored", "failed", "deleted"]}
SECONDS = {"type": "string", "pattern": "^[0-9]+$", "description": "seconds"}
COUNT = {"type": "integer", "minimum": 0}
TIMESTAMP = {"type": "string", "format": "date-time", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$",
             "description": "ISO 8601, UTC, milliseconds", "example": "2026-11-25T16:39:29.671Z"}

_ERROR_TEXT = {
    400: "malformed request (bad id, bad multipart body, bad parameter)",
    401: "an API key is required, or the one sent is invalid or revoked",
    403: "this needs an admin key (minis3 keys create --tenant NAME --admin)",
    404: "no such file for this tenant (another tenant's file id answers the same)",
    409: "the file is not stored yet; `error.status` holds its status",
    413: "the body is larger than MINIS3_MAX_UPLOAD_BYTES",
    416: "the range lies outside the file; Content-Range holds `bytes */<size>`",
    429: "rate limit exceeded; retry after Retry-After seconds",
    503: "a backing service (MongoDB or Redis) is down; retry after Retry-After seconds",
    507: "no space left on the spool or a node",
}


def _error(status: int) -> dict:
    response = {"description": _ERROR_TEXT[status],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"required": True, "schema": SECONDS}}
    return response


def _errors(*statuses: int) -> dict:
    return {str(s): _error(s) for s in (*statuses, 429, 503)}


def _json(description: str, ref: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _bytes_response(description: str) -> dict:
    return {
        "description": description,
        "headers": {
            "ETag": {"required": True, "schema": {"type": "string"}, "description": "quoted SHA-256"},
            "Content-Length": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}},
            "Accept-Ranges": {"required": True, "schema": {"type": "string", "enum": ["bytes"]}},
            "Content-Disposition": {"required": True, "schema": {"type": "string"},
                                    "description": "attachment with an RFC 5987 filename*"},
        },
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    }


_READ_HEADERS = [
    {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "one `bytes=` range; malformed or multi-range headers are ignored (200)"},
    {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "If-Range", "in": "header", "required": False, "schema": {"type": "string"}},
]


def _stored_read(summary: str, param: dict) -> dict:
    return {"get": {
        "summary": summary,
        "parameters": [param, *_READ_HEADERS],
        "responses": {
            "200": _bytes_response("the file's bytes, each chunk verified before it is sent"),
            "206": _bytes_response("the requested range"),
            "304": {"description": "If-None-Match matched the ETag"},
            **_errors(400, 401, 404, 409, 416),
        },
    }}


def _file_id_param() -> dict:
    return {"name": "fileId", "in": "path", "required": True, "schema": FILE_ID}


FILE_INFO = {
    "type": "object",
    "required": ["fileId", "name", "size", "contentType", "sha256", "chunkCount", "status", "created", "updated"],
    "properties": {
        "fileId": FILE_ID, "name": {"type": "string"}, "size": {"type": "integer", "minimum": 0},
        "contentType": {"type": "string"},
        # null for an S3 multipart object: its manifest is composed of its parts', no byte re-read
        "sha256": {"anyOf": [SHA256, {"type": "null"}]}, "chunkCount": {"type": "integer", "minimum": 0},
        "status": STATUS, "created": TIMESTAMP, "updated": TIMESTAMP,
        "bucket": {"type": "string"}, "key": {"type": "string"},
    },
}

COMPONENTS = {
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    },
    "schemas": {
        "Error": {
            "type": "object", "required": ["success", "error"],
            "properties": {
                "success": {"type": "boolean", "enum": [False]},
                "error": {"type": "object", "required": ["code", "message"],
                          "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
            },
        },
        "FileInfo": FILE_INFO,
        "Stored": {"allOf": [{"$ref": "#/components/schemas/FileInfo"}, {
            "type": "object", "required": ["success", "statusUrl"],
            "properties": {"success": {"type": "boolean", "enum": [True]}, "statusUrl": {"type": "string"}}}]},
        "Accepted": {
            "type": "object", "required": ["success", "fileId", "status", "statusUrl", "size", "sha256"],
            "properties": {"success": {"type": "boolean", "enum": [True]}, "fileId": FILE_ID, "status": STATUS,
                           "statusUrl": {"type": "string"}, "size": {"type": "integer", "minimum": 0},
                           "sha256": SHA256},
        },
        "Status": {
            "type": "object", "required": ["fileId", "status", "progress", "error"],
            "properties": {
                "fileId": FILE_ID, "status": STATUS, "error": {"type": "string", "nullable": True},
                "progress": {"type": "object", "required": ["chunksDone", "chunksTotal"],
                             "properties": {"chunksDone": {"type": "integer", "minimum": 0},
                                            "chunksTotal": {"type": "integer", "minimum": 0}}},
            },
        },
        "FileList": {
            "type": "object", "required": ["files", "nextCursor"],
            "properties": {"files": {"type": "array", "items": {"$ref": "#/components/schemas/FileInfo"}},
                           "nextCursor": {**FILE_ID, "nullable": True}},
        },
        "Health": {
            "type": "object", "required": ["success", "ok", "redis", "mongodb", "nodes"],
            "properties": {
                "success": {"type": "boolean"}, "ok": {"type": "boolean"},
                "redis": {"$ref": "#/components/schemas/Check"}, "mongodb": {"$ref": "#/components/schemas/Check"},
                "nodes": {"type": "array", "items": {
                    "type": "object", "required": ["node", "ok"],
                    "description": "path, freeBytes and totalBytes only for an open service",
                    "properties": {"node": {"type": "string"}, "ok": {"type": "boolean"}, "path": {"type": "string"},
                                   "state": {"type": "string", "enum": ["up", "down", "full", "draining"]},
                                   "freeBytes": {"type": "integer"}, "totalBytes": {"type": "integer"}}}},
                "layout": {"type": "object", "properties": {
                    "ec": {"type": "string"}, "ok": {"type": "boolean"}, "writableNodes": {"type": "integer"},
                    "reason": {"type": "string"}}},
                "chunks": {"type": "object", "properties": {"ok": {"type": "boolean"},
                                                            "degraded": {"type": "integer"}}},
            },
        },
        "Check": {"type": "object", "required": ["ok"],
                  "properties": {"ok": {"type": "boolean"}, "error": {"type": "string"}}},
        "FileCounts": {
            "type": "object", "required": ["total", "byStatus"],
            "properties": {"total": COUNT, "byStatus": {
                "type": "object", "required": list(STATUS["enum"]),
                "properties": {state: COUNT for state in STATUS["enum"]}}},
        },
        "StoreStats": {
            "type": "object",
            "required": ["success", "scope", "tenant", "files", "logicalBytes", "physicalBytes", "dedupRatio",
                         "chunks", "nodes", "queueDepth", "lastGc", "usage", "tenants"],
            "properties": {
                "success": {"type": "boolean", "enum": [True]}, "scope": {"type": "string", "enum": ["store"]},
                "files": {"$ref": "#/components/schemas/FileCounts"}, "logicalBytes": COUNT,
                "physicalBytes": COUNT, "dedupRatio": {"type": "number", "nullable": True}, "chunks": COUNT,
                "nodes": {"type": "array", "items": {
                    "type": "object", "required": ["node", "chunks", "bytes"],
                    "properties": {"node": {"type": "string"}, "chunks": COUNT, "bytes": COUNT,
                                   "freeBytes": COUNT, "totalBytes": COUNT}}},
                "queueDepth": COUNT, "tenant": {"type": "string"}, "dedupSavedBytes": COUNT,
                "usage": {"$ref": "#/components/schemas/Usage"},
                "tenants": {"type": "array", "items": {"$ref": "#/components/schemas/Usage"}},
                "lastGc": {"type": "object", "nullable": True,
                           "required": ["at", "chunksFreed", "bytesFreed", "seconds"],
                           "properties": {"at": TIMESTAMP, "chunksFreed": COUNT, "bytesFreed": COUNT,
                                          "seconds": {"type": "number", "nullable": True}}},
            },
        },
        "TenantStats": {
            "type": "object", "additionalProperties": False,
            "required": ["success", "scope", "tenant", "files", "logicalBytes", "usage"],
            "properties": {
                "success": {"type": "boolean", "enum": [True]}, "scope": {"type": "string", "enum": ["tenant"]},
                "tenant": {"type": "string"}, "files": {"$ref": "#/components/schemas/FileCounts"},
                "logicalBytes": COUNT, "usage": {"$ref": "#/components/schemas/Usage"},
            },
        },
        "Usage": {
            "type": "object", "nullable": True,
            "description": "a tenant's stored files as last computed by the sampler (every MINIS3_SAMPLE_INTERVAL_S): "
                           "physical bytes count the distinct chunks of its own files once (null past a bound)",
            "required": ["tenant", "at", "files", "logicalBytes", "physicalBytes", "dedupRatio"],
            "properties": {"tenant": {"type": "string"}, "at": TIMESTAMP, "files": COUNT, "logicalBytes": COUNT,
                           "physicalBytes": {**COUNT, "nullable": True},
                           "dedupRatio": {"type": "number", "nullable": True},
                           "chunks": {**COUNT, "nullable": True}, "distinctChunks": {**COUNT, "nullable": True}},
        },
        "Chunk": {
            "type": "object",
            "required": ["index", "offset", "size", "sha256", "state", "layout", "fragments", "sharedWith",
                         "sharedCountCapped", "sharedFiles"],
            "properties": {
                "index": COUNT, "offset": COUNT, "size": COUNT, "sha256": SHA256,
                "state": {"type": "string", "description": "`spool` while ingest has not placed it"},
                "layout": {"type": "string", "nullable": True, "example": "1+0"},
                "fragments": {"type": "array", "items": {
                    "type": "object", "required": ["index", "node"],
                    "properties": {"index": COUNT, "node": {"type": "string"}, "size": {**COUNT, "nullable": True},
                                   "parity": {"type": "boolean"}}}},
                "sharedWith": {**COUNT, "description": "other live files naming this chunk: the caller's own, "
                                                       "or every tenant's for an admin key"},
                "sharedCountCapped": {"type": "boolean"},
                "sharedFiles": {"type": "array", "items": {
                    "type": "object", "required": ["fileId", "name"],
                    "properties": {"fileId": FILE_ID, "name": {"type": "string"}}}},
            },
        },
        "ChunkList": {
            "type": "object", "required": ["file", "scope", "chunks", "nextCursor"],
            "properties": {"file": {"$ref": "#/components/schemas/FileInfo"},
                           "scope": {"type": "string", "enum": ["tenant", "store"]},
                           "chunks": {"type": "array", "items": {"$ref": "#/components/schemas/Chunk"}},
                           "nextCursor": {"type": "string", "nullable": True, "pattern": "^[0-9]+$"}},
        },
        "History": {
            "type": "object", "required": ["success", "windowSeconds", "sampleIntervalSeconds", "samples", "events"],
            "properties": {
                "success": {"type": "boolean"}, "windowSeconds": {"type": "number"},
                "sampleIntervalSeconds": {"type": "number"},
                "samples": {"type": "array", "items": {
                    "type": "object",
                    "required": ["at", "seconds", "queueDepth", "storedFiles", "storedBytes", "throughputBytesPerS",
                                 "logicalBytes", "physicalBytes", "nodes"],
                    "properties": {"at": TIMESTAMP, "seconds": {"type": "number"}, "queueDepth": COUNT,
                                   "storedFiles": COUNT, "storedBytes": COUNT,
                                   "throughputBytesPerS": {"type": "number"}, "logicalBytes": COUNT,
                                   "physicalBytes": COUNT,
                                   "uniqueBytes": {**COUNT, "description": "distinct chunks' bytes "
                                                   "(absent from samples taken before it was recorded)"},
                                   "nodes": {"type": "object", "additionalProperties": COUNT}}}},
                "events": {"type": "object", "description": "runs of each periodic job (gc; scrub, heal where "
                                                            "recorded), newest first",
                           "additionalProperties": {"type": "array", "items": {
                               "type": "object", "required": ["at"], "properties": {"at": TIMESTAMP}}}},
            },
        },
        "Stats": {"oneOf": [{"$ref": "#/components/schemas/StoreStats"},
                            {"$ref": "#/components/schemas/TenantStats"}]},
    },
}

PATHS = {
    "/api/upload": {"post": {
        "summary": "Upload a file (multipart/form-data, field `file`), streamed to the spool",
        "parameters": [{"name": "wait", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "`1`, `true` or `yes`: answer once the file is stored (201)"}],
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}}}}}},
        "responses": {
            "201": _json("stored (with ?wait=1)", "Stored"),
            "202": _json("received and queued for ingest", "Accepted"),
            **_errors(400, 401, 413, 507),
        },
    }},
    "/api/files": {"get": {
        "summary": "This tenant's files, newest first; `q` searches them",
        "parameters": [
            {"name": "q", "in": "query", "required": False,
             "schema": {"type": "string", "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f]*$"},
             "description": "files whose name starts with it (any case), whose `bucket/key` starts with it (or "
                            "whose bucket it names), or whose SHA-256 starts with it (4 to 64 hex digits)"},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
            {"name": "cursor", "in": "query", "required": False,
             "schema": {"type": "string", "pattern": "^([0-9a-fA-F]{24})?$"},
             "description": "`nextCursor` of the previous page; empty or absent: the first page"},
        ],
        "responses": {"200": _json("one page of files", "FileList"), **_errors(400, 401)},
    }},
    "/api/files/{fileId}": {
        **_stored_read("Download a stored file", _file_id_param()),
        "delete": {
            "summary": "Delete a file; its space comes back at the next garbage collection",
            "parameters": [_file_id_param()],
            "responses": {"204": {"description": "deleted"}, **_errors(400, 401, 404)},
        },
    },
    "/api/files/{fileId}/status": {"get": {
        "summary": "Ingest status and chunk progress",
        "parameters": [_file_id_param()],
        "responses": {"200": _json("the file's status", "Status"), **_errors(400, 401, 404)},
    }},
    "/api/files/{fileId}/chunks": {"get": {
        "summary": "A page of the file's chunks: offset, size, hash, state, the node of each fragment, and how "
                   "many other files share it (the caller's own; every tenant's for an admin key)",
        "parameters": [
            _file_id_param(),
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string", "pattern": "^[0-9]{0,12}$"},
             "description": "`nextCursor` of the previous page (a chunk index)"},
        ],
        "responses": {"200": _json("one page of chunks", "ChunkList"), **_errors(400, 401, 404)},
    }},
    "/api/stats/history": {"get": {
        "summary": "Samples of the store's figures (queue depth, throughput, logical and physical bytes) over "
                   "the window, and the runs of its periodic jobs: an admin key's (or an open service's)",
        "parameters": [{"name": "window", "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 60, "maximum": 7200, "default": 3600},
                        "description": "seconds"}],
        "responses": {"200": _json("samples and job runs", "History"), **_errors(400, 401, 403)},
    }},
    "/api/files/by-hash/{sha256}": _stored_read(
        "Download this tenant's newest stored file with that whole-file SHA-256",
        {"name": "sha256", "in": "path", "required": True, "schema": SHA256}),
    "/api/stats": {"get": {
        "summary": "Figures: an admin key (or an open service) gets the whole store's (files, logical and "
                   "physical bytes, nodes, queue depth, last GC); any other key its own tenant's files and "
                   "logical bytes",
        "responses": {"200": _json("figures; `scope` says which", "Stats"), **_errors(401)},
    }},
    "/api/health": {"get": {
        "summary": "Readiness of Redis, MongoDB and each node (no key needed, not rate limited)",
        "security": [],
        "responses": {"200": _json("all ready", "Health"),
                      "503": {**_json("something is not ready", "Health"),
                              "headers": {"Retry-After": {"required": True, "schema": SECONDS}}}},
    }},
    "/api/openapi.json": {"get": {
        "summary": "This document", "security": [],
        "responses": {"200": {"description": "OpenAPI 3 description",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }},
}


def describe(keys_required: bool) -> dict:
    """The document; while the service runs open, a key is optional (the empty requirement)."""
    security = [{"bearer": []}, {"apiKey": []}]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Mini-S3", "version": "1",
            "description": "An object store with global chunk deduplication. Errors are "
                           "`{\"success\": false, \"error\": {\"code\", \"message\"}}`.",
        },
        "servers": [{"url": "/"}],
        "security": security if keys_required else [{}, *security],
        "paths": PATHS,
        "components": COMPONENTS,
    }


@openapi.get("/api/openapi.json")
def spec():
    return jsonify(describe(current_app.extensions["minis3.auth"].keys_required()))
