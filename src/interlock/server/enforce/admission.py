"""Kubernetes validating admission webhook (``admission.k8s.io/v1`` ``AdmissionReview``) over the
gate.

    interlock serve --admission 0.0.0.0:8443 --admission-dns interlock.interlock-system.svc
    interlock serve --print-ca-bundle          # the caBundle of the webhook configuration
    # deploy/kubernetes/: Deployment, Service, ValidatingWebhookConfiguration (failurePolicy: Fail)

``POST /v1/admission`` (or ``/validate``) over HTTPS takes an ``AdmissionReview`` and answers
one with ``response: {uid, allowed, status: {code: 403, reason: "Forbidden", message:
"<CODE>: <detail>"}}`` — the DESIGN §3 code first in the message, which ``kubectl`` prints
after ``admission webhook "..." denied the request:``. An ``AdmissionRequest`` becomes an
action request:

* **action** ``k8s.<operation>``: ``k8s.create``, ``k8s.update``, ``k8s.delete``,
  ``k8s.connect``;
* **resource** ``K8sObject::"<group or core>/<kind>/<namespace or _cluster>/<name>"`` from
  ``request.kind`` (the kind the webhook matched), ``namespace`` and ``name`` — the object's
  ``metadata.name`` when the request has none, ``_generated`` when the API server has not named
  it yet (``generateName``). ``core`` and the leading ``_`` cannot be a group or a name;
* **principal** from ``userInfo.username`` (``trust_domain`` is ``--admission-trust-domain``,
  default ``cluster.local``): a service account ``system:serviceaccount:<ns>:<sa>`` is
  ``spiffe://<trust domain>/ns/<ns>/sa/<sa>`` (the SPIFFE Kubernetes convention, as Istio and
  SPIRE name workloads); any other user is ``spiffe://<trust domain>/user/<name>``, where every
  byte of the UTF-8 name outside ``A-Z a-z 0-9 - .`` is written ``_XX`` (hex, so ``_`` itself
  is ``_5F`` and the encoding is one-to-one: ``alice@example.com`` is
  ``user/alice_40example.com``, ``system:admin`` is ``user/system_3Aadmin``). The identity is
  what the API server authenticated: Interlock trusts the API server (it is the only client of
  the webhook; keep the port off other networks), not the object;
* **capability**: Kubernetes sends none. It is read from ``userInfo.extra
  ["interlock.dev/capability"]`` (exactly one value; none is ``IDENTITY_UNVERIFIED``, two are
  ``MALFORMED_REQUEST``). What can set it, and the trust each implies: impersonation
  (``kubectl --as=<user> --as-user-extra=interlock.dev/capability=<token>``; needs RBAC
  ``impersonate`` on ``userextras/interlock.dev/capability``, so whoever may impersonate may
  present any token — but a token names its principal, so presenting another principal's token
  gains nothing), an authenticating front proxy (``X-Remote-Extra-Interlock.dev%2fcapability``;
  trust rests on the proxy's client certificate) or a webhook/structured authenticator that
  maps a claim to ``extra``. Extra values are written to the API server's audit log with the
  user: issue short-lived tokens;
* **args**: ``group``, ``version``, ``kind``, ``resource``, ``subresource``, ``name``,
  ``namespace``, ``dry_run``, ``username``, ``groups`` (Set<String>), the raw ``object`` when
  its compact JSON is at most :data:`MAX_OBJECT_ARG_BYTES` and at most :data:`MAX_OBJECT_DEPTH`
  deep (else ``object_omitted: {bytes, sha256}``) — undeclared in the schema, so no policy can
  read it, but it is kept with the decision for replay (do not route Secrets to this webhook) —
  and, for a Pod and the pod template of a Deployment, StatefulSet, DaemonSet, ReplicaSet,
  ReplicationController, Job, CronJob or PodTemplate, the typed facts Cedar can read (it cannot
  iterate lists), over every container, init container and ephemeral container:
  ``pod: {privileged, host_network, host_pid, images, unpinned_images, all_images_pinned,
  run_as_root?}`` (:func:`pod_facts`). ``object`` is what is admitted: a DELETE has no ``pod``;
* **context** ``{"kubernetes": {"uid": <review uid>}}``, which links the ledger record to the
  API server's audit event.

Every review with a readable ``uid`` is decided or refused through the gate and so recorded: a
review that is not a well-formed v1 ``AdmissionReview`` (wrong ``apiVersion``, missing
``request`` fields, a malformed pod) is recorded as a ``MALFORMED_REQUEST`` refusal and denied.
A body that is not JSON, has no readable ``uid``, is over :data:`MAX_BODY_BYTES` (413) or not
``application/json`` (415) is answered with an HTTP error and a JSON ``detail``, not recorded
(there is nothing to answer): the API server counts it as a failed call, which
``failurePolicy: Fail`` turns into a rejection. Nothing here answers allowed except an allow
from the gate. An error in this module denies ``INTERNAL_ERROR``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from interlock.core.model import Effect, ReasonCode
from interlock.server.enforce.admission_wire import (
    DNS_LABEL,
    AdmissionRequest,
    AdmissionReview,
    UserInfo,
)

if TYPE_CHECKING:
    import uvicorn

    from interlock.core.model import Decision
    from interlock.gate import Gate
    from interlock.server.state import ServerState

__all__ = [
    "CAPABILITY_EXTRA",
    "MAX_BODY_BYTES",
    "AdmissionConfig",
    "AdmissionError",
    "AdmissionListener",
    "action_request",
    "admission_server_config",
    "answer",
    "create_admission_app",
    "pod_facts",
    "principal_of",
    "resource_id",
]

_log = logging.getLogger("interlock.server")

API_VERSION: Final = "admission.k8s.io/v1"
#: the ``userInfo.extra`` key that carries the capability
CAPABILITY_EXTRA: Final = "interlock.dev/capability"
#: the API server takes bodies of at most 3 MiB (``--max-request-bytes``) and etcd stores
#: objects of at most 1.5 MiB; an UPDATE review carries ``object`` and ``oldObject``
MAX_BODY_BYTES: Final = 7 * 1024 * 1024
#: the raw object rides in args up to this size (the whole action request is capped at 64 KiB)
MAX_OBJECT_ARG_BYTES: Final = 32 * 1024
#: and this depth (intake refuses requests nested deeper than 32 levels)
MAX_OBJECT_DEPTH: Final = 24

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}\Z")
_SA_PART = re.compile(rf"{DNS_LABEL}(\.{DNS_LABEL})*\Z")
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}\Z")
#: where the pod spec is, by (group, kind)
_POD_SPEC: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("", "Pod"): ("spec",),
    ("", "PodTemplate"): ("template", "spec"),
    ("", "ReplicationController"): ("spec", "template", "spec"),
    ("apps", "Deployment"): ("spec", "template", "spec"),
    ("apps", "StatefulSet"): ("spec", "template", "spec"),
    ("apps", "DaemonSet"): ("spec", "template", "spec"),
    ("apps", "ReplicaSet"): ("spec", "template", "spec"),
    ("batch", "Job"): ("spec", "template", "spec"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


class AdmissionError(ValueError):
    """An admission request that cannot be mapped to an action request (it is refused
    ``MALFORMED_REQUEST``); the message says why."""


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """How reviews map to requests: the SPIFFE trust domain of principals."""

    trust_domain: str = "cluster.local"

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise ValueError(
                f"not a SPIFFE trust domain: {self.trust_domain!r} (lower-case letters, digits,"
                " '.', '-', '_')"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionListener:
    """Where :func:`interlock.server.serve` serves the webhook: ``host``/``port``, the PEM
    certificate (chain) and key files, and the mapping's :class:`AdmissionConfig`."""

    host: str
    port: int
    cert: Path
    key: Path
    config: AdmissionConfig = field(default_factory=AdmissionConfig)


# -- the mapping ---------------------------------------------------------------------------------


def _segment(name: str) -> str:
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AdmissionError("userInfo.username is not valid Unicode") from exc
    out = "".join(chr(b) if chr(b) in _SAFE else f"_{b:02X}" for b in raw)
    if not out.strip("."):  # "." and ".." are not SPIFFE path segments
        out = out.replace(".", "_2E")
    return out


def principal_of(username: str, trust_domain: str = "cluster.local") -> str:
    """The SPIFFE ID of a Kubernetes user (module docstring).

    >>> principal_of("system:serviceaccount:shop:deployer")
    'spiffe://cluster.local/ns/shop/sa/deployer'
    >>> principal_of("alice@example.com", "acme.test")
    'spiffe://acme.test/user/alice_40example.com'

    Raises:
        AdmissionError: the username is empty or not valid Unicode.
    """
    if not username:
        raise AdmissionError("userInfo.username is empty: no principal")
    parts = username.split(":")
    if (
        len(parts) == 4
        and parts[:2] == ["system", "serviceaccount"]
        and _SA_PART.match(parts[2])
        and _SA_PART.match(parts[3])
    ):
        return f"spiffe://{trust_domain}/ns/{parts[2]}/sa/{parts[3]}"
    return f"spiffe://{trust_domain}/user/{_segment(username)}"


def _metadata_name(obj: dict[str, Any] | None) -> str:
    meta = obj.get("metadata") if obj else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name and "/" not in name and len(name) <= 253 else ""


def resource_id(request: AdmissionRequest) -> str:
    """``<group or core>/<kind>/<namespace or _cluster>/<name or _generated>``."""
    name = request.name or _metadata_name(request.object_) or "_generated"
    return "/".join(
        (request.kind.group or "core", request.kind.kind, request.namespace or "_cluster", name)
    )


def _at(obj: Any, path: tuple[str, ...], where: str) -> dict[str, Any]:
    for key in path:
        if not isinstance(obj, dict):
            raise AdmissionError(f"{where} is not an object")
        obj = obj.get(key)
        where = f"{where}.{key}"
    if not isinstance(obj, dict):
        raise AdmissionError(f"{where} is missing or not an object")
    return obj


def pod_facts(spec: dict[str, Any]) -> dict[str, Any]:
    """What Cedar reads about a pod spec (``context.args.pod``), over every container, init
    container and ephemeral container:

    ``privileged`` any ``securityContext.privileged``; ``host_network``, ``host_pid`` the
    spec's ``hostNetwork``/``hostPID``; ``images`` every image (``""`` for a container without
    one); ``unpinned_images`` those without an ``@sha256:<64 hex>`` digest;
    ``all_images_pinned`` none unpinned; ``run_as_root`` true when a container's effective
    ``runAsUser`` (its own, else the pod's) is 0, false when every container has a non-zero
    ``runAsUser`` or ``runAsNonRoot: true``, and absent when it depends on the image's USER.

    >>> pod_facts({"containers": [{"name": "a", "image": "nginx:1.27"}]})["unpinned_images"]
    ['nginx:1.27']

    Raises:
        AdmissionError: a container list is not a list of objects, or an image is not a string.
    """
    containers: list[dict[str, Any]] = []
    for key in _CONTAINER_LISTS:
        items = spec.get(key)
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(c, dict) for c in items):
            raise AdmissionError(f"pod spec {key} is not a list of objects")
        containers += items
    if not containers:
        raise AdmissionError("pod spec has no containers")
    pod_sc = spec.get("securityContext") or {}
    if not isinstance(pod_sc, dict):
        raise AdmissionError("pod spec securityContext is not an object")
    images: set[str] = set()
    privileged, root, unknown = False, False, False
    for c in containers:
        image = c.get("image", "")
        if not isinstance(image, str):
            raise AdmissionError("a container image is not a string")
        images.add(image)
        sc = c.get("securityContext") or {}
        if not isinstance(sc, dict):
            raise AdmissionError("a container securityContext is not an object")
        privileged = privileged or sc.get("privileged") is True
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if type(uid) is int and uid == 0:
            root = True
        elif not ((type(uid) is int and uid > 0) or non_root is True):
            unknown = True
    unpinned = sorted(i for i in images if not _DIGEST.search(i))
    facts: dict[str, Any] = {
        "privileged": privileged,
        "host_network": spec.get("hostNetwork") is True,
        "host_pid": spec.get("hostPID") is True,
        "images": sorted(images),
        "unpinned_images": unpinned,
        "all_images_pinned": not unpinned,
    }
    if root or not unknown:
        facts["run_as_root"] = root
    return facts


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counting no further than ``limit + 1``."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            if d > limit:
                return d
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _capability(user: UserInfo) -> str | None:
    values = user.extra.get(CAPABILITY_EXTRA)
    if not values:
        return None
    if len(values) != 1:
        raise AdmissionError(f"userInfo.extra[{CAPABILITY_EXTRA!r}] holds more than one value")
    token = values[0].strip()
    return token or None


def action_request(request: AdmissionRequest, config: AdmissionConfig) -> dict[str, Any]:
    """The action request an admission request asks for (module docstring; intake validates it
    further).

    Raises:
        AdmissionError: no principal, two capabilities, or an object of a pod-bearing kind
            without a well-formed pod spec.
    """
    obj = request.object_
    args: dict[str, Any] = {
        "group": request.kind.group,
        "version": request.kind.version,
        "kind": request.kind.kind,
        "resource": request.resource.resource,
        "subresource": request.subResource,
        "name": request.name or _metadata_name(obj),
        "namespace": request.namespace,
        "dry_run": request.dryRun,
        "username": request.userInfo.username,
        "groups": sorted(set(request.userInfo.groups)),
    }
    if obj is not None:
        raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
        if len(raw) <= MAX_OBJECT_ARG_BYTES and _depth(obj, MAX_OBJECT_DEPTH) <= MAX_OBJECT_DEPTH:
            args["object"] = obj
        else:
            args["object_omitted"] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        path = _POD_SPEC.get((request.kind.group, request.kind.kind))
        if path is not None:
            args["pod"] = pod_facts(_at(obj, path, "object"))
    out: dict[str, Any] = {
        "principal": principal_of(request.userInfo.username, config.trust_domain),
        "action": f"k8s.{request.operation.lower()}",
        "resource": {"type": "K8sObject", "id": resource_id(request)},
        "args": args,
        "context": {"kubernetes": {"uid": request.uid}},
    }
    capability = _capability(request.userInfo)
    if capability is not None:
        out["capability"] = capability
    return out


# -- answering -----------------------------------------------------------------------------------


def review_response(uid: str, decision: Decision | None, code: str = "", detail: str = "") -> Any:
    """The ``AdmissionReview`` answering ``uid``: allowed only for an allow ``decision``."""
    annotations: dict[str, str] = {}
    if decision is not None:
        annotations["request-id"] = decision.request_id
        if decision.ledger_index is not None:
            annotations["ledger-index"] = str(decision.ledger_index)
        if decision.effect is Effect.ALLOW:
            return {
                "apiVersion": API_VERSION,
                "kind": "AdmissionReview",
                "response": {"uid": uid, "allowed": True, "auditAnnotations": annotations},
            }
        first = decision.reasons[0] if decision.reasons else None
        code = first.code.value if first is not None else ReasonCode.INTERNAL_ERROR.value
        detail = first.detail if first is not None else "denied"
    code = code or ReasonCode.INTERNAL_ERROR.value
    annotations["code"] = code
    return {
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": False,
            "status": {
                "code": 403,
                "reason": "Forbidden",
                "message": f"{code}: {detail}"[:1024],
            },
            "auditAnnotations": annotations,
        },
    }


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _readable_uid(doc: Any) -> str | None:
    req = doc.get("request") if isinstance(doc, dict) else None
    uid = req.get("uid") if isinstance(req, dict) else None
    if isinstance(uid, str) and 0 < len(uid) <= 128 and uid.isascii() and uid.isprintable():
        return uid
    return None


def _salvage(doc: dict[str, Any], config: AdmissionConfig) -> dict[str, Any]:
    """As much of the action request as a malformed review yields, to record its refusal (what
    cannot be read is left out, and intake records that instead)."""
    found = doc.get("request")
    req: dict[str, Any] = found if isinstance(found, dict) else {}
    op = req.get("operation")
    action = f"k8s.{op.lower()}" if op in ("CREATE", "UPDATE", "DELETE", "CONNECT") else "k8s.admit"
    user = req.get("userInfo")
    username = user.get("username") if isinstance(user, dict) else None
    principal = ""
    if isinstance(username, str) and 0 < len(username) <= 512:
        try:
            principal = principal_of(username, config.trust_domain)
        except AdmissionError:
            principal = ""
    return {
        "principal": principal,
        "action": action,
        "resource": {"type": "K8sObject", "id": "_malformed"},
        "args": {},
        "context": {"kubernetes": {"uid": _readable_uid(doc)}},
    }


def _problem(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "review"
        parts.append(f"{where}: {err['msg']}")
    return "not an AdmissionReview v1: " + "; ".join(parts)


def answer(gate: Gate, body: bytes, config: AdmissionConfig) -> tuple[int, Any]:
    """The HTTP status and JSON body answering one webhook call (module docstring). Never raises:
    an error denies ``INTERNAL_ERROR`` (or answers 500 when no ``uid`` can be read)."""
    uid: str | None = None
    doc: Any = None
    try:
        try:
            doc = json.loads(body, object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError):
            return 400, {"detail": "the body is not a JSON AdmissionReview"}
        uid = _readable_uid(doc)
        if uid is None:
            return 400, {"detail": "no request.uid: not an AdmissionReview v1"}
        try:
            review = AdmissionReview.model_validate(doc)
            request = action_request(review.request, config)
        except ValidationError as exc:
            problem = _problem(exc)
            refused = gate.refuse(_salvage(doc, config), ReasonCode.MALFORMED_REQUEST, problem)
            return 200, review_response(uid, refused)
        except (AdmissionError, RecursionError) as exc:
            detail = str(exc) if isinstance(exc, AdmissionError) else "object nested too deeply"
            refused = gate.refuse(_salvage(doc, config), ReasonCode.MALFORMED_REQUEST, detail)
            return 200, review_response(uid, refused)
        return 200, review_response(uid, gate.decide(request))
    except Exception as exc:  # noqa: BLE001 - the enforcement point answers deny, never raises
        _log.exception("admission: cannot answer the review")
        if uid is None:
            return 500, {"detail": f"admission failed: {type(exc).__name__}"}
        code, detail = ReasonCode.INTERNAL_ERROR.value, f"admission failed: {type(exc).__name__}"
        return 200, review_response(uid, None, code, detail)


# -- the HTTPS app -------------------------------------------------------------------------------


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None when it is (or is announced to be) over :data:`MAX_BODY_BYTES`."""
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_admission_app(
    gate: Gate, config: AdmissionConfig | None = None, *, state: ServerState | None = None
) -> Starlette:
    """The webhook as an ASGI app: ``POST /v1/admission`` and ``POST /validate``; with
    ``state`` (the HTTP API's), ``GET /healthz`` and ``GET /readyz`` as the API answers them,
    for the kubelet's probes over the same HTTPS port."""
    cfg = config or AdmissionConfig()

    async def review(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return JSONResponse({"detail": "send application/json"}, status_code=415)
        body = await _bounded_body(request)
        if body is None:
            detail = f"the review exceeds {MAX_BODY_BYTES} bytes"
            return JSONResponse({"detail": detail}, status_code=413)
        status, doc = await run_in_threadpool(answer, gate, body, cfg)
        if state is not None:
            response = doc.get("response") if isinstance(doc, dict) else None
            allowed = isinstance(response, dict) and response.get("allowed") is True
            code = "" if allowed else _code_of(response)
            state.metrics.decisions.labels("admission", "allow" if allowed else "deny", code).inc()
        return JSONResponse(doc, status_code=status)

    routes = [
        Route("/v1/admission", review, methods=["POST"]),
        Route("/validate", review, methods=["POST"]),
    ]
    if state is not None:
        from interlock.server.routes.health import summary

        async def healthz(request: Request) -> JSONResponse:
            del request
            return JSONResponse(await run_in_threadpool(summary, state))

        async def readyz(request: Request) -> JSONResponse:
            del request
            reasons = await run_in_threadpool(state.not_ready)
            return JSONResponse(
                {"ready": not reasons, "reasons": reasons}, status_code=503 if reasons else 200
            )

        routes += [Route("/healthz", healthz), Route("/readyz", readyz)]
    return Starlette(routes=routes)


def admission_server_config(
    gate: Gate,
    listener: AdmissionListener,
    *,
    state: ServerState | None = None,
    log_level: str = "info",
) -> uvicorn.Config:
    """The uvicorn configuration serving :func:`create_admission_app` over HTTPS on
    ``listener`` (TLS 1.2 or later; HTTP/1.1, which the API server speaks to webhooks)."""
    import ssl

    import uvicorn

    return uvicorn.Config(
        create_admission_app(gate, listener.config, state=state),
        host=listener.host,
        port=listener.port,
        ssl_certfile=str(listener.cert),
        ssl_keyfile=str(listener.key),
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
        log_level=log_level,
        lifespan="off",  # the HTTP API's lifespan runs the shared background work
        ws="none",
        proxy_headers=False,
        server_header=False,
        limit_concurrency=256,  # each review may hold up to MAX_BODY_BYTES
        timeout_keep_alive=5,
        # closing TLS waits for the client's close_notify (30 s by default in asyncio): an idle
        # keep-alive client that never answers must not hold the process (and the gate) open
        timeout_graceful_shutdown=5,
    )


def _code_of(response: Any) -> str:
    if not isinstance(response, dict):
        return "HTTP_ERROR"
    code = response.get("auditAnnotations", {}).get("code", "")
    return code if isinstance(code, str) and code else ReasonCode.INTERNAL_ERROR.value
