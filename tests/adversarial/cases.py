"""The hostile inputs, one row each: what is sent and the exact answer expected.

A row is `Case(id, method, path, body, status, answer, headers)`; `answer` is the exact JSON
(dict) or text (str) of the response. `{canary}` in a path or body is replaced by the canary
file's absolute path and `{blob}` by the digest of a small uploaded non-model blob, `{gguf4}`
by the 4-byte "GGUF" blob (CVE-2024-39720), `{badgguf}` by a GGUF header with absurd counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

H64 = "a" * 64


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: bytes | str | dict | None
    status: int
    answer: dict | str
    headers: dict = field(default_factory=dict)


def j(obj) -> str:
    return json.dumps(obj)


NOT_FOUND = "404 page not found"
INVALID_DIGEST = {"error": "invalid digest format"}
INVALID_NAME = {"error": "invalid model name"}

CASES = [
    # -- digests and blob uploads (CVE-2024-37032 Probllama, CVE-2025-44779) --------------------------
    Case("blob-dotdot-segments", "POST", "/api/blobs/sha256:../../../canary/secret.txt", b"x", 404, NOT_FOUND),
    Case("blob-encoded-slashes", "POST", "/api/blobs/sha256:..%2f..%2f..%2fcanary%2fsecret.txt", b"x", 404, NOT_FOUND),
    Case("blob-encoded-dotdot-only", "POST", "/api/blobs/%2e%2e", b"x", 400, INVALID_DIGEST),
    Case("blob-absolute-path", "POST", "/api/blobs/%2Fetc%2Fpasswd", b"x", 404, NOT_FOUND),
    Case("blob-absolute-path-in-digest", "POST", "/api/blobs/sha256:%2Fetc", b"x", 404, NOT_FOUND),
    Case("blob-digest-too-short", "POST", "/api/blobs/sha256:" + "a" * 63, b"x", 400, INVALID_DIGEST),
    Case("blob-digest-too-long", "POST", "/api/blobs/sha256:" + "a" * 65, b"x", 400, INVALID_DIGEST),
    Case("blob-digest-not-hex", "POST", "/api/blobs/sha256:" + "g" * 64, b"x", 400, INVALID_DIGEST),
    Case("blob-digest-other-algorithm", "POST", "/api/blobs/sha512:" + "a" * 128, b"x", 400, INVALID_DIGEST),
    Case("blob-digest-nul", "POST", "/api/blobs/sha256:" + "a" * 63 + "%00", b"x", 400, INVALID_DIGEST),
    Case("blob-digest-trailing-newline", "POST", "/api/blobs/sha256:" + "a" * 64 + "%0a", b"x", 400, INVALID_DIGEST),
    Case("blob-digest-empty", "POST", "/api/blobs/", b"x", 404, NOT_FOUND),
    Case("blob-head-traversal", "HEAD", "/api/blobs/..%2F..%2Fcanary", None, 404, ""),
    Case("blob-head-bad-digest", "HEAD", "/api/blobs/sha256:..", None, 400, ""),
    Case("blob-bytes-do-not-match", "POST", "/api/blobs/sha256:" + H64, b"other bytes", 400,
         {"error": f'digest mismatch, expected "sha256:{H64}", got '
                   '"sha256:a3ead5eedad5df82318c51685dbc1c147a36d1ff8584fc82de6b08d0bf63a795"'}),
    Case("blob-over-the-blob-limit", "POST", "/api/blobs/sha256:" + H64, b"\0" * ((8 << 20) + 1), 413,
         {"error": "request body larger than 8388608 bytes"}),
    # -- model names and paths in create, copy, delete, show (CVE-2024-39722) -------------------------
    Case("create-name-traversal", "POST", "/api/create", j({"model": "../../canary/x", "files": {}}), 400, INVALID_NAME),
    Case("create-name-absolute", "POST", "/api/create", j({"model": "/etc/passwd", "files": {}}), 400, INVALID_NAME),
    Case("create-name-too-many-parts", "POST", "/api/create", j({"model": "h/a/b/c/d", "files": {}}), 400, INVALID_NAME),
    Case("create-name-nul", "POST", "/api/create", j({"model": "a\u0000b", "files": {}}), 400, INVALID_NAME),
    Case("create-name-backslash", "POST", "/api/create", j({"model": "..\\..\\x", "files": {}}), 400, INVALID_NAME),
    Case("create-name-dot-tag", "POST", "/api/create", j({"model": "x:..", "files": {}}), 400, INVALID_NAME),
    Case("create-name-huge", "POST", "/api/create", j({"model": "a" * 100_000, "files": {}}), 400, INVALID_NAME),
    Case("create-file-key-traversal", "POST", "/api/create",
         j({"model": "x", "files": {"../../canary/secret.txt": "{blob}"}}), 400, {"error": "file path must be relative"}),
    Case("create-file-key-absolute", "POST", "/api/create",
         j({"model": "x", "files": {"{canary}": "{blob}"}}), 400, {"error": "file path must be relative"}),
    Case("create-file-digest-traversal", "POST", "/api/create",
         j({"model": "x", "files": {"m.gguf": "sha256:../../canary/secret.txt"}}), 400, INVALID_DIGEST),
    Case("create-file-digest-empty", "POST", "/api/create", j({"model": "x", "files": {"m.gguf": ""}}), 400, INVALID_DIGEST),
    Case("create-file-never-uploaded", "POST", "/api/create", j({"model": "x", "files": {"m.gguf": "sha256:" + H64}}),
         400, {"error": f'blob "sha256:{H64}" not found'}),
    # the server never opens a FROM path: an existing file and a missing one get the same answer (CVE-2024-39719)
    Case("create-modelfile-from-existing-path", "POST", "/api/create", j({"model": "x", "modelfile": "FROM {canary}"}),
         400, {"error": "(line 1): FROM {canary}: no such file, and not a valid model name"}),
    Case("create-modelfile-from-missing-path", "POST", "/api/create", j({"model": "x", "modelfile": "FROM {canary}.no"}),
         400, {"error": "(line 1): FROM {canary}.no: no such file, and not a valid model name"}),
    Case("create-modelfile-from-relative-path", "POST", "/api/create",
         j({"model": "x", "modelfile": "FROM ../../canary/secret.txt"}),
         400, {"error": "(line 1): FROM ../../canary/secret.txt: no such file, and not a valid model name"}),
    Case("create-modelfile-adapter-path", "POST", "/api/create",
         j({"model": "x", "modelfile": "FROM base\nADAPTER /dev/zero"}), 400,
         {"error": "(line 2): ADAPTER /dev/zero: no such file or directory"}),  # never opened (CVE-2024-39721)
    Case("create-path-field-device", "POST", "/api/create", j({"model": "x", "path": "/dev/zero"}),
         400, {"error": "the 'path' field is not supported: send the Modelfile text as 'modelfile'"}),
    Case("create-gguf-magic-only", "POST", "/api/create", j({"model": "x", "files": {"m.gguf": "{gguf4}"}}),
         400, {"error": "invalid GGUF file m.gguf: truncated GGUF file: unexpected end of file reading version"}),
    Case("create-gguf-absurd-counts", "POST", "/api/create", j({"model": "x", "files": {"m.gguf": "{badgguf}"}}),
         400, {"error": "invalid GGUF file m.gguf: truncated GGUF file: header counts exceed the file size"}),
    Case("create-not-gguf", "POST", "/api/create", j({"model": "x", "files": {"m.gguf": "{blob}"}}),
         400, {"error": "supplied file was not in GGUF format"}),
    Case("copy-destination-traversal", "POST", "/api/copy", j({"source": "base", "destination": "../../../canary/dir/x"}),
         400, {"error": 'destination "../../../canary/dir/x" is invalid'}),
    Case("copy-source-traversal", "POST", "/api/copy", j({"source": "../../../canary/secret.txt", "destination": "y"}),
         400, {"error": 'source "../../../canary/secret.txt" is invalid'}),
    Case("copy-destination-absolute", "POST", "/api/copy", j({"source": "base", "destination": "{canary}"}),
         400, {"error": 'destination "{canary}" is invalid'}),
    Case("delete-traversal", "DELETE", "/api/delete", j({"model": "../../../canary/secret.txt"}),
         400, {"error": 'name "../../../canary/secret.txt" is invalid'}),
    Case("delete-absolute", "DELETE", "/api/delete", j({"model": "{canary}"}), 400, {"error": 'name "{canary}" is invalid'}),
    Case("show-traversal", "POST", "/api/show", j({"model": "../../../canary/secret.txt"}), 400, INVALID_NAME),
    Case("show-absent-and-existing-look-alike", "POST", "/api/show", j({"model": "canary/secret"}),
         404, {"error": "model 'canary/secret:latest' not found"}),
    # -- JSON bodies and options ----------------------------------------------------------------------
    Case("json-malformed", "POST", "/api/show", b'{"model": ', 400,
         {"error": "invalid JSON in request body: Expecting value: line 1 column 11 (char 10)"}),
    Case("json-deeply-nested", "POST", "/api/show", b"[" * 100_000 + b"]" * 100_000, 400,
         {"error": "invalid JSON in request body: nested too deeply"}),
    Case("json-not-an-object", "POST", "/api/show", b"[]", 400,
         {"error": "json: cannot unmarshal array into Go value of type api.ShowRequest"}),
    Case("json-not-utf8", "POST", "/api/show", b'{"model": "\xff\xfe"}', 400, {"error": "invalid request body: not UTF-8"}),
    Case("json-empty-body", "POST", "/api/show", b"", 400, {"error": "missing request body"}),
    Case("json-nan-parameter", "POST", "/api/create", b'{"model": "x", "from": "base", "parameters": {"temperature": NaN}}',
         400, {"error": "invalid JSON in request body: invalid character 'N' looking for beginning of value"}),
    Case("json-infinity-parameter", "POST", "/api/create",
         b'{"model": "x", "from": "base", "parameters": {"num_ctx": 1e999}}', 400,
         {"error": 'option "num_ctx" must be of type integer'}),
    Case("json-infinity-float-parameter", "POST", "/api/create",
         b'{"model": "x", "from": "base", "parameters": {"temperature": -1e999}}', 400,
         {"error": 'option "temperature" must be of type float32'}),
    Case("json-wrong-type", "POST", "/api/create", j({"model": 1, "from": "base"}), 400,
         {"error": "invalid value for CreateRequest.model: Input should be a valid string"}),
    Case("json-over-the-body-limit", "POST", "/api/show", b" " * (32 << 20) + b"{}", 413,
         {"error": "request body larger than 33554432 bytes"}),
    Case("template-that-loops", "POST", "/api/create",
         j({"model": "x", "from": "base", "template": "{{range $i := .Messages}}{{template \"t\"}}{{end}}"}), 400,
         {"error": "template error: template: undefined template specified"}),
    # -- exposure: Host check (CVE-2024-28224) ----------------------------------------------------------
    Case("host-rebinding", "GET", "/api/tags", None, 403,
         {"error": 'forbidden: host "rebind.attacker.example" is not allowed (a loopback server answers only '
                   "localhost names; add others to CORRAL_ALLOWED_HOSTS)"},
         {"Host": "rebind.attacker.example:11434"}),
    Case("host-rebinding-delete", "DELETE", "/api/delete", j({"model": "base"}), 403,
         {"error": 'forbidden: host "localhost.attacker.example" is not allowed (a loopback server answers only '
                   "localhost names; add others to CORRAL_ALLOWED_HOSTS)"},
         {"Host": "localhost.attacker.example"}),
    # -- HTTP framing ----------------------------------------------------------------------------------
    Case("method-not-allowed", "PUT", "/api/tags", None, 405, "405 method not allowed"),
    Case("unknown-route", "GET", "/api/../../canary/secret.txt", None, 404, NOT_FOUND),
]

# -- pull and push names (the name becomes a path under manifests/ and a registry URL) ------------------
CASES += [
    Case("pull-name-traversal", "POST", "/api/pull", j({"model": "../../../canary/x", "stream": False}), 400, INVALID_NAME),
    Case("pull-name-absolute", "POST", "/api/pull", j({"model": "{canary}", "stream": False}), 400, INVALID_NAME),
    Case("pull-host-with-path-segments", "POST", "/api/pull",
         j({"model": "127.0.0.1:1/../../canary/x", "insecure": True, "stream": False}), 400, INVALID_NAME),
    Case("push-name-traversal", "POST", "/api/push", j({"model": "../../../canary/x", "stream": False}), 400, INVALID_NAME),
    Case("push-name-absolute", "POST", "/api/push", j({"model": "{canary}", "stream": False}), 400, INVALID_NAME),
]

# -- options at inference time (the tiny model is loaded for real) -------------------------------------
GEN = '{"model": "base", "prompt": "a", "raw": true, "stream": false, "options": %s}'
CHAT = '{"model": "base", "messages": [{"role": "user", "content": "a"}], "stream": false, "options": %s}'
CASES += [
    Case("generate-option-nan", "POST", "/api/generate", GEN % '{"temperature": NaN}', 400,
         {"error": "invalid JSON: unexpected character, expected a JSON value: line 1 column 91 (char 90)"}),
    Case("chat-option-infinity", "POST", "/api/chat", CHAT % '{"top_p": 1e999}', 400,
         {"error": "invalid JSON: number is infinity when parsed as double: line 1 column 105 (char 104)"}),
    Case("generate-num-ctx-absurd", "POST", "/api/generate", GEN % '{"num_ctx": 1000000000000}', 400,
         {"error": 'invalid option "num_ctx": 1000000000000 is out of range'}),
    Case("generate-num-ctx-negative", "POST", "/api/generate", GEN % '{"num_ctx": -1}', 400,
         {"error": 'invalid option "num_ctx": -1 is out of range'}),
    Case("generate-num-predict-absurd", "POST", "/api/generate", GEN % '{"num_predict": 100000000000000000000}', 400,
         {"error": 'invalid option "num_predict": 100000000000000000000 is out of range'}),
    Case("generate-num-predict-negative", "POST", "/api/generate", GEN % '{"num_predict": -5}', 400,
         {"error": 'invalid option "num_predict": -5 is out of range'}),
    Case("generate-stop-not-a-list", "POST", "/api/generate", GEN % '{"stop": {"a": 1}}', 400,
         {"error": 'option "stop" must be of type array'}),
    Case("generate-deeply-nested-options", "POST", "/api/generate", GEN % ("[" * 100_000 + "]" * 100_000), 400,
         {"error": "invalid JSON: depth limit exceeded: line 1 column 1099 (char 1098)"}),
    Case("chat-deeply-nested-message", "POST", "/api/chat",
         '{"model": "base", "messages": [{"role": "user", "content": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "}]}",
         400, {"error": "invalid JSON: depth limit exceeded: line 1 column 6187 (char 6186)"}),
    Case("openai-deeply-nested", "POST", "/v1/chat/completions", '{"model": "base", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}",
         400, {"error": {"message": "invalid JSON in request body: depth limit exceeded: line 1 column 1055 (char 1054)",
                         "type": "invalid_request_error", "param": None, "code": None}}),
    Case("openai-nan", "POST", "/v1/chat/completions",
         '{"model": "base", "messages": [{"role": "user", "content": "a"}], "temperature": NaN}', 400,
         {"error": {"message": "invalid JSON in request body: unexpected character, expected a JSON value: line 1 column 82 "
                               "(char 81)", "type": "invalid_request_error", "param": None, "code": None}}),
]
