"""The Kubernetes admission webhook end to end: a real ``interlock serve --admission`` (HTTPS with
the certificate it generated in its home; the client verifies it against the CA the server
wrote) receives AdmissionReview documents exactly as the API server sends them, built with the
official ``kubernetes`` client's models, from a home whose signed policy holds
deploy/kubernetes/policies/kubernetes.cedar. No API server can run here: what it would do when
Interlock is down is what the manifest's ``failurePolicy: Fail`` says, asserted below."""

from __future__ import annotations

import base64
import json
import signal
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from interlock.home import Home
from interlock.policy.bundle import sign_bundle
from tests.e2e.console_harness import issue, ledger_tail, make_home, start_server, stop_server
from tests.e2e.k8s_reviews import (
    DEPLOYER_ID,
    PINNED,
    UNPINNED,
    deployment,
    pod,
    review,
)
from tests.e2e.test_exec import cli
from tests.e2e.test_serve_cli import _free_port

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"


@dataclass
class Webhook:
    home: Path
    url: str
    api: str
    proc: Any
    client: httpx.Client
    token: str


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    home = make_home(tmp_path_factory.mktemp("admission"))
    pol = home / "policy" / "policies.cedar"
    pol.write_text(pol.read_text() + (KUBE / "policies" / "kubernetes.cedar").read_text())
    sign_bundle(home / "policy", Home.load(home).private_key("policy"), version=2)
    token = issue(home, DEPLOYER_ID, "k8s.create:K8sObject::*", "k8s.update:K8sObject::*")
    port = _free_port()
    api, proc = start_server(home, "--admission", f"127.0.0.1:{port}")
    ca = home / "tls" / "admission" / "ca.pem"
    client = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=30)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # the HTTP API is up; the webhook starts on the same loop
            try:
                client.get(url + "/healthz")
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the webhook did not start listening"
                time.sleep(0.1)
        yield Webhook(home, url, api, proc, client, token)
    finally:
        client.close()
        stop_server(proc)


def _post(hook: Webhook, body: dict[str, Any] | bytes, path: str = "/v1/admission") -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return hook.client.post(
        hook.url + path, content=content, headers={"content-type": "application/json"}
    )


def _response(hook: Webhook, doc: dict[str, Any]) -> dict[str, Any]:
    r = _post(hook, doc)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["apiVersion"] == "admission.k8s.io/v1"
    assert out["kind"] == "AdmissionReview"
    resp: dict[str, Any] = out["response"]
    assert resp["uid"] == doc["request"]["uid"]
    return resp


def _record(hook: Webhook, request_id: str) -> dict[str, Any]:
    for entry in ledger_tail(hook.home, 50):
        rec: dict[str, Any] = entry["record"]
        if rec.get("type") == "decision" and rec["id"] == request_id:
            return rec
    raise AssertionError(f"decision {request_id} is not on the ledger")


def _denied(hook: Webhook, doc: dict[str, Any], code: str) -> dict[str, Any]:
    resp = _response(hook, doc)
    assert resp["allowed"] is False
    assert resp["status"]["code"] == 403
    assert resp["status"]["reason"] == "Forbidden"
    assert resp["status"]["message"].startswith(f"{code}: ")
    rec = _record(hook, resp["auditAnnotations"]["request-id"])
    assert rec["effect"] == "deny"
    assert rec["reasons"][0]["code"] == code
    return rec


def test_the_server_certificate_verifies_against_the_ca_it_wrote(webhook: Webhook) -> None:
    with pytest.raises(httpx.ConnectError):  # the system roots do not know Interlock's CA
        httpx.get(webhook.url + "/healthz", timeout=10)
    with pytest.raises(httpx.TransportError):  # HTTPS only
        httpx.get(webhook.url.replace("https", "http") + "/healthz", timeout=10)
    assert webhook.client.get(webhook.url + "/healthz").json()["status"] == "ok"
    assert webhook.client.get(webhook.url + "/readyz").json() == {"ready": True, "reasons": []}
    r = cli(webhook.home, "serve", "--print-ca-bundle")
    assert r.returncode == 0, r.stderr
    ca = (webhook.home / "tls" / "admission" / "ca.pem").read_bytes()
    assert base64.b64decode(r.stdout.strip()) == ca


def test_an_allowed_deployment_by_the_permitted_service_account(webhook: Webhook) -> None:
    doc = review(deployment(image=PINNED), capability=webhook.token)
    resp = _response(webhook, doc)
    assert resp["allowed"] is True
    assert "status" not in resp
    rec = _record(webhook, resp["auditAnnotations"]["request-id"])
    assert rec["effect"] == "allow"
    assert rec["request"]["principal"] == DEPLOYER_ID
    assert rec["request"]["action"] == "k8s.create"
    assert rec["request"]["resource"] == {"type": "K8sObject", "id": "apps/Deployment/shop/web"}
    # the same through /validate, as an UPDATE
    upd = review(deployment(), capability=webhook.token, operation="UPDATE", old=deployment())
    r = _post(webhook, upd, "/validate")
    assert r.json()["response"]["allowed"] is True


def test_a_privileged_pod_is_denied_policy_forbid(webhook: Webhook) -> None:
    rec = _denied(webhook, review(pod(privileged=True), capability=webhook.token), "POLICY_FORBID")
    assert rec["request"]["resource"]["id"] == "core/Pod/shop/web-1"
    _denied(webhook, review(deployment(privileged=True), capability=webhook.token), "POLICY_FORBID")


def test_an_unpinned_image_is_denied(webhook: Webhook) -> None:
    doc = review(deployment(image=UNPINNED), capability=webhook.token)
    rec = _denied(webhook, doc, "POLICY_FORBID")
    assert rec["reasons"][0].get("policy") == "k8s-images-pinned-by-digest"


def test_without_a_capability_it_is_denied(webhook: Webhook) -> None:
    _denied(webhook, review(deployment()), "IDENTITY_UNVERIFIED")


def test_another_namespace_or_another_user_is_not_permitted(webhook: Webhook) -> None:
    doc = review(deployment(namespace="billing"), capability=webhook.token)
    _denied(webhook, doc, "POLICY_NO_PERMIT")
    doc = review(deployment(), username="alice@example.com", capability=webhook.token)
    rec = _denied(webhook, doc, "IDENTITY_UNVERIFIED")  # the token names the deployer
    assert rec["request"]["principal"] == "spiffe://cluster.local/user/alice_40example.com"


def test_malformed_and_oversized_reviews_are_never_allowed(webhook: Webhook) -> None:
    r = _post(webhook, b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionRev')
    assert r.status_code == 400
    r = _post(webhook, {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})
    assert r.status_code == 400  # no request: no uid to answer
    wrong = review(deployment(), capability=webhook.token, uid="wrong-version")
    wrong["apiVersion"] = "admission.k8s.io/v1beta1"
    _denied(webhook, wrong, "MALFORMED_REQUEST")
    no_user = review(deployment(), capability=webhook.token, uid="no-user")
    del no_user["request"]["userInfo"]
    _denied(webhook, no_user, "MALFORMED_REQUEST")
    big = review(deployment(), capability=webhook.token)
    big["request"]["object"]["metadata"]["annotations"] = {"x": "y" * (8 * 1024 * 1024)}
    r = _post(webhook, big)
    assert r.status_code == 413
    assert "allowed" not in r.text
    # the webhook still answers after all that
    doc = review(deployment(), capability=webhook.token)
    assert _response(webhook, doc)["allowed"] is True


def test_stopping_interlock_leaves_the_api_server_to_failure_policy_fail(
    webhook: Webhook,
) -> None:
    hooks = [
        d
        for d in yaml.safe_load_all((KUBE / "30-webhook.yaml").read_text())
        if d and d["kind"] == "ValidatingWebhookConfiguration"
    ]
    assert [w["failurePolicy"] for w in hooks[0]["webhooks"]] == ["Fail"]
    webhook.proc.send_signal(signal.SIGTERM)
    assert webhook.proc.wait(timeout=30) == 0  # both servers stopped; the gate closed
    with pytest.raises(httpx.ConnectError):  # what the API server gets: then Fail rejects
        _post(webhook, review(deployment(), capability=webhook.token))
    with pytest.raises(httpx.ConnectError):
        httpx.get(webhook.api + "/healthz", timeout=5)
    r = cli(webhook.home, "ledger", "verify")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_supplied_certificate_is_served_and_a_busy_port_stops_everything(
    tmp_path: Path,
) -> None:
    import socket
    import subprocess

    from interlock.server.enforce.certs import ensure_admission_tls
    from tests.e2e.test_exec import EXE, _env

    home = make_home(tmp_path)
    mine = ensure_admission_tls(tmp_path / "own-ca", ["webhook.example"])  # not in the home
    assert mine.ca is not None
    port = _free_port()
    _, proc = start_server(
        home,
        "--admission",
        f"127.0.0.1:{port}",
        "--admission-cert",
        str(mine.cert),
        "--admission-key",
        str(mine.key),
    )
    try:
        ctx = ssl.create_default_context(cafile=str(mine.ca))
        with httpx.Client(verify=ctx, timeout=30) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    r = client.get(f"https://127.0.0.1:{port}/readyz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
        assert r.status_code == 200
        assert not (home / "tls").exists()  # nothing generated
    finally:
        stop_server(proc)
    # the webhook's port is taken: serve fails to start and leaves nothing running
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        api_port = _free_port()
        r2 = subprocess.run(
            [*EXE, "serve", "--port", str(api_port), "--admission", f"127.0.0.1:{taken}"],
            env=_env(home),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r2.returncode == 3, r2.stderr  # uvicorn's startup failure, as for the API's port
    assert "address already in use" in r2.stderr.lower()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=5)


def test_bad_admission_options_are_usage_errors(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    for args, said in [
        (["--admission", "nowhere"], "HOST:PORT"),
        (["--admission", "127.0.0.1:0", "--admission-cert", str(home)], "both"),
        (["--admission-dns", "x.example"], "apply to --admission"),
        (["--admission", "127.0.0.1:0", "--admission-dns", "bad name"], "not a DNS name"),
        (["--admission", "127.0.0.1:0", "--admission-trust-domain", "A B"], "trust domain"),
    ]:
        r = cli(home, "serve", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert said in " ".join(r.stderr.split()), (args, r.stderr)
