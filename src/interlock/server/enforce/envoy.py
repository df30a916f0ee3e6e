"""Envoy external authorization (``envoy.service.auth.v3.Authorization``, gRPC) over the gate.

    interlock serve --ext-authz 127.0.0.1:9001 --ext-authz-principal header:x-agent-id
    # Envoy: http_filters: envoy.filters.http.ext_authz with grpc_service -> 127.0.0.1:9001,
    #        transport_api_version: V3, failure_mode_allow: false   (deploy/envoy/envoy.yaml)

A ``CheckRequest`` becomes an action request:

* **principal** — with ``spiffe`` (the default), ``attributes.source.principal``: the URI SAN
  of the client certificate Envoy verified on a mutual-TLS listener. Trust rests on Envoy's TLS
  validation (its trusted CA and SAN matching): without mTLS the field is empty and every
  request is denied ``MALFORMED_REQUEST``. With ``header:NAME``, the value of that request
  header: trust rests on whatever sets it — Envoy must remove a client-supplied value
  (``request_headers_to_remove``) before a trusted component (an authenticating proxy, a
  Lua/JWT filter) sets it, or any client can name any principal. The capability still has to
  be held by that principal, so naming another principal gains nothing without its token.
* **action** ``http.request``; **resource** ``Host::"<host>"`` (the ``Host``/``:authority``
  without its port);
* **args** ``{"method", "path", "query", "scheme", "url", "port", "headers"}``: ``path``
  without the query string, ``headers`` the configured subset (lower-cased names; declare
  those a policy reads in the bundle's schema, docs/cedar.md);
* **capability** from the configured header (default ``x-interlock-capability``, ``Bearer``
  prefix optional). On an allow, Envoy is told to remove it before the request goes upstream:
  the upstream never sees the agent's token.

An allow answers ``OK`` (with ``x-interlock-decision: allow`` and the ledger index added
upstream); anything else answers ``PERMISSION_DENIED`` with a 403 whose
``x-interlock-reason`` header carries the DESIGN §3 reason code and whose JSON body carries the
decision. Every check is decided and recorded by the gate like any other request (a malformed
one as a ``MALFORMED_REQUEST`` denial). An error in this module denies ``INTERNAL_ERROR``; an
Interlock that is down or past Envoy's timeout is denied by Envoy itself when its filter has
``failure_mode_allow: false`` (the configuration this module documents and tests).
"""

from __future__ import annotations

import json
import logging
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from interlock.core.model import Effect, ReasonCode

if TYPE_CHECKING:
    from interlock.core.model import Decision
    from interlock.gate import Gate
    from interlock.server.metrics import Metrics

__all__ = ["ExtAuthzConfig", "action_request", "check", "start_ext_authz"]

_log = logging.getLogger("interlock.server")

ACTION = "http.request"
REASON_HEADER = "x-interlock-reason"
MAX_MESSAGE_BYTES = 256 * 1024
#: largest header value copied into args (a longer one is left out, not truncated)
MAX_HEADER_VALUE = 4096


@dataclass(frozen=True, slots=True)
class ExtAuthzConfig:
    """Where the principal and capability come from, and which headers policies see."""

    principal: str = "spiffe"  # "spiffe" or "header:<name>"
    capability_header: str = "x-interlock-capability"
    forward_headers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.principal != "spiffe" and not (
            self.principal.startswith("header:") and len(self.principal) > len("header:")
        ):
            raise ValueError("the principal comes from 'spiffe' or 'header:<name>'")
        for name in (self.capability_header, *self.forward_headers, self._principal_header()):
            if name and (name != name.strip() or ":" in name or not name.isascii()):
                raise ValueError(f"not a header name: {name!r}")

    def _principal_header(self) -> str:
        return self.principal.partition(":")[2].lower() if self.principal != "spiffe" else ""

    @classmethod
    def parse(
        cls, principal: str, capability_header: str, forward: list[str] | None
    ) -> ExtAuthzConfig:
        """From the ``serve`` options (names lower-cased, as Envoy sends them).

        Raises:
            ValueError: a source or header name that cannot be.
        """
        source = principal.strip()
        if source.lower().startswith("header:"):
            source = "header:" + source[len("header:") :].strip().lower()
        return cls(
            principal=source,
            capability_header=capability_header.strip().lower(),
            forward_headers=tuple(h.strip().lower() for h in forward or () if h.strip()),
        )


def _host(authority: str) -> tuple[str, int | None]:
    host, port = authority, None
    if authority.startswith("["):  # [v6]:port
        end = authority.find("]")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif authority.count(":") == 1:
        name, _, p = authority.partition(":")
        if p.isdigit():
            host, port = name, int(p)
    return host.lower(), port


def action_request(check_request: Any, config: ExtAuthzConfig) -> dict[str, Any]:
    """The action request a ``CheckRequest`` asks for (intake validates it further)."""
    attrs = check_request.attributes
    http = attrs.request.http
    headers = {k.lower(): v for k, v in http.headers.items()}
    if config.principal == "spiffe":
        principal = attrs.source.principal
    else:
        principal = headers.get(config._principal_header(), "")
    token = headers.get(config.capability_header, "").strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    path, _, query = http.path.partition("?")
    host, port = _host(http.host or headers.get(":authority", ""))
    args: dict[str, Any] = {
        "method": http.method.upper(),
        "path": path,
        "query": query or http.query,
        "scheme": http.scheme or headers.get(":scheme", ""),
        "url": f"{http.scheme or 'http'}://{http.host}{http.path}",
        "headers": {
            name: headers[name]
            for name in config.forward_headers
            if name in headers and len(headers[name]) <= MAX_HEADER_VALUE
        },
    }
    if port is not None:
        args["port"] = port
    request: dict[str, Any] = {
        "principal": principal,
        "action": ACTION,
        "resource": {"type": "Host", "id": host},
        "args": args,
    }
    if token:
        request["capability"] = token
    traceparent = headers.get("traceparent")
    if traceparent:
        request["traceparent"] = traceparent
    return request


def _header(key: str, value: str) -> Any:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))


def _denied(code: str, detail: str, decision: Decision | None = None) -> Any:
    body: dict[str, Any] = {"effect": "deny", "code": code, "detail": detail[:500]}
    if decision is not None:
        body.update(
            request_id=decision.request_id,
            reasons=[r.to_json() for r in decision.reasons],
            ledger_index=decision.ledger_index,
        )
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message=code),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
            headers=[
                _header(REASON_HEADER, code),
                _header("content-type", "application/json"),
            ],
            body=json.dumps(body, separators=(",", ":")),
        ),
    )


def check(gate: Gate, check_request: Any, config: ExtAuthzConfig) -> Any:
    """Decide one ``CheckRequest``; never raises (an error is an ``INTERNAL_ERROR`` deny)."""
    try:
        decision = gate.decide(action_request(check_request, config))
    except Exception as exc:  # noqa: BLE001 - the enforcement point answers deny, never raises
        _log.exception("ext_authz: cannot build or decide the request")
        return _denied(ReasonCode.INTERNAL_ERROR.value, f"ext_authz failed: {type(exc).__name__}")
    if decision.effect is Effect.ALLOW:
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[
                    _header("x-interlock-decision", "allow"),
                    _header("x-interlock-ledger-index", str(decision.ledger_index)),
                ],
                headers_to_remove=[config.capability_header],
            ),
        )
    first = decision.reasons[0] if decision.reasons else None
    code = first.code.value if first is not None else ReasonCode.INTERNAL_ERROR.value
    return _denied(code, first.detail if first is not None else "denied", decision)


class _Servicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, gate: Gate, config: ExtAuthzConfig, metrics: Metrics | None) -> None:
        self._gate = gate
        self._config = config
        self._metrics = metrics

    def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method name
        del context
        response = check(self._gate, request, self._config)
        if self._metrics is not None:
            allowed = response.status.code == code_pb2.OK
            code = "" if allowed else response.status.message
            self._metrics.decisions.labels("ext_authz", "allow" if allowed else "deny", code).inc()
        return response


def start_ext_authz(
    gate: Gate,
    address: str,
    config: ExtAuthzConfig | None = None,
    *,
    metrics: Metrics | None = None,
    workers: int = 8,
) -> grpc.Server:
    """Serve ``Authorization/Check`` on ``address`` (``HOST:PORT``, plaintext gRPC: keep it on
    loopback or a private network beside Envoy). Returns the started server; ``stop()`` it.

    Raises:
        RuntimeError: the address cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ext-authz"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=1024,
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        _Servicer(gate, config or ExtAuthzConfig(), metrics), server
    )
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen on {address} for ext_authz")
    server.start()
    return server
