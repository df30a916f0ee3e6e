"""What the MCP proxy records and answers: denial texts, result digests, the outcome of a
governed call."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

import mcp.types as types
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from interlock.adapters.sdk import disclosed_detail
from interlock.core.canonical import digest
from interlock.core.model import ReasonCode
from interlock.errors import Error
from interlock.runtime.supervisor import Watch

if TYPE_CHECKING:
    from interlock.core.model import ActionRequest, Decision
from interlock.adapters.mcp_proxy.options import R

# -- texts and digests ---------------------------------------------------------------------------


def denial_text(decision: Decision) -> str:
    """What the agent reads for a deny: the reason codes, the first shareable detail, the
    decision hash and the request id. Never raises."""
    codes = ", ".join(decision.codes) or ReasonCode.INTERNAL_ERROR.value
    # the detail of an opaque code (interlock.adapters.sdk.OPAQUE_CODES) stays on the ledger
    details = (disclosed_detail(r.code, r.detail) for r in decision.reasons)
    detail = next((d for d in details if d), "")
    shown = f": {detail}" if detail else ""
    return (
        f"denied by Interlock: {codes}{shown}"
        f" (decision {decision.decision_hash}, request {decision.request_id})"
    )


def _json_digest(value: Any) -> str:
    """SHA-256 (hex) of the RFC 8785 bytes of a JSON value; a value RFC 8785 cannot take here
    (nested too deep) is digested as its compact JSON text, prefixed ``json:``. Never raises on
    JSON values."""
    try:
        return digest(value, allow_floats=True)
    except Error:
        raw = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return "json:" + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()


def continuation_context(
    params: types.CallToolRequestParams
    | types.ReadResourceRequestParams
    | types.GetPromptRequestParams,
) -> dict[str, Any] | None:
    """The request's ``context`` for a request that continues an earlier one: the digests of
    the ``inputResponses`` and ``requestState`` the client sent (and the proxy forwards), as
    ``{"mcp": {"input_responses_sha256": …, "request_state_sha256": …}}`` — so the decision
    and the ledger commit to them and a policy can see that they are present. ``None`` when
    there are neither. Never raises."""
    sent = params.model_dump(
        mode="json", by_alias=True, exclude_none=True, include={"input_responses", "request_state"}
    )
    out: dict[str, str] = {}
    if "inputResponses" in sent:
        out["input_responses_sha256"] = _json_digest(sent["inputResponses"])
    if "requestState" in sent:
        out["request_state_sha256"] = _json_digest(sent["requestState"])
    return {"mcp": out} if out else None


def result_digest(result: BaseModel) -> str:
    """SHA-256 (hex) of the RFC 8785 bytes of ``result``'s JSON form (by alias, ``None`` fields
    left out). A result JSON cannot canonicalize (nested deeper than RFC 8785 allows here) is
    digested as its compact JSON text, prefixed ``json:``. Never raises."""
    data = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    try:
        return digest(data, allow_floats=True)
    except Error:
        raw = result.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8", "replace")
        return "json:" + hashlib.sha256(raw).hexdigest()


# -- the governed request ------------------------------------------------------------------------


@dataclass(slots=True)
class _Begun:
    """What admission produced: a deny, an allow that could not start, or a running request."""

    decision: Decision
    request: ActionRequest | None = None
    watch: Watch | None = None
    problem: str | None = None


@dataclass(slots=True)
class _Failure:
    kind: str  # timeout | upstream_unavailable | upstream_error | internal
    code: int
    message: str
    passthrough: MCPError | None = None


@dataclass(slots=True)
class _Outcome(Generic[R]):
    """A governed request's answer: ``result``, or an error (``message`` and JSON-RPC ``code``),
    or an upstream error to pass through unchanged."""

    result: R | None = None
    message: str = ""
    code: int = types.INTERNAL_ERROR
    data: dict[str, Any] | None = None
    passthrough: MCPError | None = None

    def as_error(self) -> MCPError:
        if self.passthrough is not None:
            return self.passthrough
        return MCPError(code=self.code, message=self.message, data=self.data)


def _tool_error(text: str) -> types.CallToolResult:
    return types.CallToolResult(is_error=True, content=[types.TextContent(type="text", text=text)])


def _fields(started: float, result: BaseModel | None, failure: _Failure | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"duration_ms": round((time.monotonic() - started) * 1000)}
    if failure is not None:
        fields.update(outcome="error", error=failure.kind)
        if failure.kind == "upstream_error":
            fields["upstream_code"] = failure.code
    elif result is not None:
        fields.update(outcome="ok", result_sha256=result_digest(result))
        if isinstance(result, types.CallToolResult) and result.is_error:
            fields["tool_error"] = True
    else:
        fields.update(outcome="error", error="terminated")
    return fields
