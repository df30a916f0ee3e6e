"""The Kubernetes admission webhook's mapping (principal, resource, args, derived pod facts), its
answers to bad input, the example policies on a real signed bundle, the generated certificate,
and the manifests under deploy/kubernetes/ (validated with kubernetes-validate)."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from starlette.testclient import TestClient

from interlock.gate import Gate
from interlock.home import Home
from interlock.policy.bundle import sign_bundle
from interlock.server.enforce.admission import (
    MAX_BODY_BYTES,
    MAX_OBJECT_ARG_BYTES,
    AdmissionConfig,
    AdmissionError,
    action_request,
    answer,
    create_admission_app,
    pod_facts,
    principal_of,
)
from interlock.server.enforce.admission_wire import AdmissionReview
from interlock.server.enforce.certs import TlsError, ca_bundle, ensure_admission_tls
from tests.e2e.k8s_reviews import (
    DEPLOYER,
    DEPLOYER_ID,
    PINNED,
    UNPINNED,
    cronjob,
    deployment,
    pod,
    pod_spec,
    review,
    serialize,
)

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
CFG = AdmissionConfig()


def _mapped(doc: dict[str, Any], config: AdmissionConfig = CFG) -> dict[str, Any]:
    return action_request(AdmissionReview.model_validate(doc).request, config)


# -- principal ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("system:serviceaccount:shop:deployer", "spiffe://cluster.local/ns/shop/sa/deployer"),
        ("system:serviceaccount:a.b:c-d", "spiffe://cluster.local/ns/a.b/sa/c-d"),
        ("alice", "spiffe://cluster.local/user/alice"),
        ("alice@example.com", "spiffe://cluster.local/user/alice_40example.com"),
        ("system:admin", "spiffe://cluster.local/user/system_3Aadmin"),
        ("a_b", "spiffe://cluster.local/user/a_5Fb"),
        ("https://issuer#sub/x", "spiffe://cluster.local/user/https_3A_2F_2Fissuer_23sub_2Fx"),
        ("..", "spiffe://cluster.local/user/_2E_2E"),
        ("é", "spiffe://cluster.local/user/_C3_A9"),
        # not a service account name: a user, never a /ns/ identity
        (
            "system:serviceaccount:shop",
            "spiffe://cluster.local/user/system_3Aserviceaccount_3Ashop",
        ),
        (
            "system:serviceaccount:Shop:deployer",
            "spiffe://cluster.local/user/system_3Aserviceaccount_3AShop_3Adeployer",
        ),
        (
            "system:serviceaccount:shop:deployer:x",
            "spiffe://cluster.local/user/system_3Aserviceaccount_3Ashop_3Adeployer_3Ax",
        ),
    ],
)
def test_principal_mapping(username: str, expected: str) -> None:
    from interlock.core.model import is_spiffe_id

    assert principal_of(username) == expected
    assert is_spiffe_id(expected)


def test_the_user_encoding_is_one_to_one() -> None:
    names = ["a:b", "a_3Ab", "a_b", "a_5Fb", "a/b", "a.b", "a-b", "A:b"]
    assert len({principal_of(n) for n in names}) == len(names)


def test_trust_domain_and_empty_username() -> None:
    assert principal_of("bob", "acme.test") == "spiffe://acme.test/user/bob"
    with pytest.raises(AdmissionError, match="empty"):
        principal_of("")
    with pytest.raises(AdmissionError, match="Unicode"):
        principal_of("\ud800")
    with pytest.raises(ValueError, match="trust domain"):
        AdmissionConfig(trust_domain="Bad Domain")


# -- resource, action, args -----------------------------------------------------------------------


def test_a_deployment_maps_to_k8s_create_on_its_object() -> None:
    req = _mapped(review(deployment(), capability="tok", dry_run=True))
    assert req["principal"] == DEPLOYER_ID
    assert req["action"] == "k8s.create"
    assert req["resource"] == {"type": "K8sObject", "id": "apps/Deployment/shop/web"}
    assert req["capability"] == "tok"
    args = req["args"]
    assert (args["group"], args["version"], args["kind"]) == ("apps", "v1", "Deployment")
    assert (args["resource"], args["subresource"], args["name"]) == ("deployments", "", "web")
    assert args["namespace"] == "shop"
    assert args["dry_run"] is True
    assert args["username"] == DEPLOYER
    assert "system:serviceaccounts:shop" in args["groups"]
    assert args["object"]["spec"]["replicas"] == 2
    assert args["pod"] == {
        "privileged": False,
        "host_network": False,
        "host_pid": False,
        "images": [PINNED],
        "unpinned_images": [],
        "all_images_pinned": True,
    }
    assert req["context"]["kubernetes"]["uid"]


def test_core_and_cluster_scoped_and_generated_names() -> None:
    assert _mapped(review(pod()))["resource"]["id"] == "core/Pod/shop/web-1"
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    doc = review(pod())
    doc["request"].update(
        kind={"group": "", "version": "v1", "kind": "Namespace"},
        resource={"group": "", "version": "v1", "resource": "namespaces"},
        namespace="",
        name="shop",
        object=ns,
    )
    req = _mapped(doc)
    assert req["resource"]["id"] == "core/Namespace/_cluster/shop"
    assert "pod" not in req["args"]
    unnamed = serialize(pod())
    del unnamed["metadata"]["name"]
    unnamed["metadata"]["generateName"] = "web-"
    doc = review(pod())
    doc["request"].update(name="", object=unnamed)
    assert _mapped(doc)["resource"]["id"] == "core/Pod/shop/_generated"


def test_operations_map_to_actions_and_delete_has_no_pod_facts() -> None:
    assert _mapped(review(deployment(), operation="UPDATE", old=deployment()))["action"] == (
        "k8s.update"
    )
    req = _mapped(review(deployment(privileged=True), operation="DELETE"))
    assert req["action"] == "k8s.delete"
    assert "pod" not in req["args"]  # nothing is admitted: a privileged pod may be deleted
    assert "object" not in req["args"]


def test_cronjob_template_is_read() -> None:
    req = _mapped(review(cronjob(image=UNPINNED, privileged=True)))
    assert req["resource"]["id"] == "batch/CronJob/shop/nightly"
    assert req["args"]["pod"]["privileged"] is True
    assert req["args"]["pod"]["unpinned_images"] == [UNPINNED]


def test_a_large_object_is_kept_by_digest_and_its_facts_still_derived() -> None:
    big = deployment(privileged=True)
    big.metadata.annotations = {"note": "x" * (MAX_OBJECT_ARG_BYTES + 1)}
    req = _mapped(review(big))
    assert "object" not in req["args"]
    omitted = req["args"]["object_omitted"]
    assert omitted["bytes"] > MAX_OBJECT_ARG_BYTES
    assert len(omitted["sha256"]) == 64
    assert req["args"]["pod"]["privileged"] is True


def test_capability_comes_from_exactly_one_extra_value() -> None:
    assert "capability" not in _mapped(review(deployment()))
    doc = review(deployment(), capability="a")
    doc["request"]["userInfo"]["extra"]["interlock.dev/capability"] = ["a", "b"]
    with pytest.raises(AdmissionError, match="more than one"):
        _mapped(doc)


# -- derived pod facts ----------------------------------------------------------------------------


def _facts(spec: Any) -> dict[str, Any]:
    return pod_facts(serialize(spec))


def test_privileged_in_any_container_list() -> None:
    assert _facts(pod_spec(privileged=True))["privileged"] is True
    assert _facts(pod_spec(init_image=PINNED, privileged=True))["privileged"] is True
    spec = serialize(pod_spec())
    spec["ephemeralContainers"] = [
        {"name": "debug", "image": "busybox", "securityContext": {"privileged": True}}
    ]
    facts = pod_facts(spec)
    assert facts["privileged"] is True
    assert "busybox" in facts["unpinned_images"]
    assert _facts(pod_spec(privileged=False))["privileged"] is False


def test_host_namespaces() -> None:
    spec = serialize(pod_spec(host_network=True))
    spec["hostPID"] = True
    facts = pod_facts(spec)
    assert (facts["host_network"], facts["host_pid"]) == (True, True)


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        (PINNED, True),
        ("nginx@sha256:" + "0" * 64, True),
        ("nginx:1.27@sha256:" + "0" * 64, True),
        ("nginx", False),
        ("nginx:latest", False),
        ("nginx@sha256:" + "0" * 63, False),  # short
        ("nginx@sha256:" + "A" * 64, False),  # digests are lower-case hex
        ("nginx@sha512:" + "0" * 128, False),
        ("", False),
    ],
)
def test_image_pinning(image: str, pinned: bool) -> None:
    facts = _facts(pod_spec(image=image, init_image=PINNED))
    assert facts["all_images_pinned"] is pinned
    assert (image in facts["unpinned_images"]) is not pinned
    assert set(facts["images"]) == {image, PINNED}


def test_run_as_root_is_true_false_or_unknown() -> None:
    assert _facts(pod_spec(run_as_user=0))["run_as_root"] is True
    assert _facts(pod_spec(run_as_user=1000))["run_as_root"] is False
    assert "run_as_root" not in _facts(pod_spec())  # the image's USER decides
    spec = serialize(pod_spec(init_image=PINNED))
    spec["securityContext"] = {"runAsNonRoot": True}
    assert pod_facts(spec)["run_as_root"] is False
    spec["containers"][0]["securityContext"] = {"runAsUser": 0}  # overrides the pod's
    assert pod_facts(spec)["run_as_root"] is True


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"containers": []},
        {"containers": "nginx"},
        {"containers": [["nginx"]]},
        {"containers": [{"name": "a", "image": 5}]},
        {"containers": [{"name": "a", "image": "x", "securityContext": "root"}]},
    ],
)
def test_a_malformed_pod_spec_is_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(AdmissionError):
        pod_facts(spec)


# -- answers to bad input, through a real gate ----------------------------------------------


@pytest.fixture
def gate(home: Path) -> Iterator[Gate]:
    with Gate.open(home) as g:
        yield g


def _review_answer(gate: Gate, body: bytes | dict[str, Any]) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return answer(gate, raw, CFG)


def _denied(result: tuple[int, Any], uid: str, code: str) -> dict[str, Any]:
    status, doc = result
    assert status == 200
    assert doc["apiVersion"] == "admission.k8s.io/v1"
    assert doc["kind"] == "AdmissionReview"
    resp: dict[str, Any] = doc["response"]
    assert resp["uid"] == uid
    assert resp["allowed"] is False
    assert resp["status"]["code"] == 403
    assert resp["status"]["message"].startswith(f"{code}: ")
    return resp


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "not a JSON"),
        (b"\xff\xfe", "not a JSON"),
        (b"[1, 2]", "no request.uid"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "no request.uid"),
        (b'{"request": {"uid": 5}}', "no request.uid"),
        (b'{"request": {"uid": "a\\nb"}}', "no request.uid"),
        (b'{"request": {"uid": "a", "uid": "b"}}', "not a JSON"),  # duplicate keys
        (b"[" * 100_000 + b"]" * 100_000, "not a JSON"),
    ],
)
def test_what_has_no_readable_uid_is_a_400(gate: Gate, body: bytes, detail: str) -> None:
    before = gate.ledger.size()
    status, doc = _review_answer(gate, body)
    assert status == 400
    assert detail in doc["detail"]
    assert gate.ledger.size() == before  # nothing to answer, nothing recorded


def _mutations() -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    def drop(*path: str) -> Callable[[dict[str, Any]], None]:
        def f(doc: dict[str, Any]) -> None:
            target = doc
            for p in path[:-1]:
                target = target[p]
            del target[path[-1]]

        return f

    def put(value: Any, *path: str) -> Callable[[dict[str, Any]], None]:
        def f(doc: dict[str, Any]) -> None:
            target = doc
            for p in path[:-1]:
                target = target[p]
            target[path[-1]] = value

        return f

    return [
        ("wrong apiVersion", put("admission.k8s.io/v1beta1", "apiVersion")),
        ("wrong kind", put("TokenReview", "kind")),
        ("no userInfo", drop("request", "userInfo")),
        ("no kind", drop("request", "kind")),
        ("no operation", drop("request", "operation")),
        ("unknown operation", put("PATCH", "request", "operation")),
        ("dryRun as a string", put("true", "request", "dryRun")),
        ("a name with a slash", put("web/x", "request", "name")),
        ("a bad namespace", put("Shop", "request", "namespace")),
        ("a group with a slash", put("apps/x", "request", "kind", "group")),
        ("object not an object", put(["x"], "request", "object")),
        ("no username", put("", "request", "userInfo", "username")),
        (
            "two capabilities",
            put(["a", "b"], "request", "userInfo", "extra", "interlock.dev/capability"),
        ),
        ("a pod without containers", put({"metadata": {}, "spec": {}}, "request", "object")),
    ]


@pytest.mark.parametrize(("name", "mutate"), _mutations(), ids=[m[0] for m in _mutations()])
def test_a_malformed_review_with_a_uid_is_a_recorded_denial(
    gate: Gate, name: str, mutate: Callable[[dict[str, Any]], None]
) -> None:
    doc = review(deployment(), capability="tok", uid=f"uid-{len(name)}")
    mutate(doc)
    before = gate.ledger.size()
    resp = _denied(_review_answer(gate, doc), f"uid-{len(name)}", "MALFORMED_REQUEST")
    assert resp["auditAnnotations"]["code"] == "MALFORMED_REQUEST"
    assert gate.ledger.size() == before + 1
    rec = json.loads(gate.ledger.entry(before))
    assert rec["type"] == "decision"
    assert rec["effect"] == "deny"
    assert rec["reasons"][0]["code"] == "MALFORMED_REQUEST"


def test_extra_fields_are_allowed_where_kubernetes_adds_them(gate: Gate) -> None:
    doc = review(deployment(), uid="u-extra")
    doc["request"]["newFieldFromAFutureApiServer"] = {"x": 1}
    doc["request"]["userInfo"]["extra"]["scopes.example"] = ["a"]
    resp = _denied(_review_answer(gate, doc), "u-extra", "IDENTITY_UNVERIFIED")  # no capability
    assert "request-id" in resp["auditAnnotations"]


def test_the_http_app_bounds_the_body_and_the_content_type(gate: Gate) -> None:
    app = create_admission_app(gate)
    with TestClient(app) as http:
        ok = http.post("/v1/admission", json=review(deployment(), uid="u-http"))
        assert ok.status_code == 200
        assert ok.json()["response"]["allowed"] is False
        assert http.post("/validate", json=review(deployment())).status_code == 200
        r = http.post("/v1/admission", content=b"{}", headers={"content-type": "text/plain"})
        assert r.status_code == 415
        big = b" " * (MAX_BODY_BYTES + 1)
        r = http.post("/v1/admission", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(8):
                yield b" " * (MAX_BODY_BYTES // 7)

        r = http.post(
            "/v1/admission", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
        assert http.get("/v1/admission").status_code == 405


# -- the example policies on a signed bundle ------------------------------------------------------


@pytest.fixture
def policy_gate(home: Path) -> Iterator[Gate]:
    pol = home / "policy" / "policies.cedar"
    pol.write_text(pol.read_text() + (KUBE / "policies" / "kubernetes.cedar").read_text())
    sign_bundle(home / "policy", Home.load(home).private_key("policy"), version=2)
    with Gate.open(home) as g:
        yield g


def _decide(gate: Gate, doc: dict[str, Any]) -> dict[str, Any]:
    status, out = answer(gate, json.dumps(doc).encode(), CFG)
    assert status == 200
    resp: dict[str, Any] = out["response"]
    assert resp["uid"] == doc["request"]["uid"]
    return resp


def _code(resp: dict[str, Any]) -> str:
    assert resp["allowed"] is False
    return str(resp["status"]["message"].split(":")[0])


def test_the_example_policies(policy_gate: Gate, issue: Callable[..., str]) -> None:
    token = issue(DEPLOYER_ID, "k8s.create:K8sObject::*", "k8s.update:K8sObject::*")
    assert _decide(policy_gate, review(deployment(), capability=token))["allowed"] is True
    upd = review(deployment(), capability=token, operation="UPDATE", old=deployment())
    assert _decide(policy_gate, upd)["allowed"] is True
    # deny privileged pods, in a deployment's template or a bare pod
    priv = review(deployment(privileged=True), capability=token)
    assert _code(_decide(policy_gate, priv)) == "POLICY_FORBID"
    assert "k8s-no-privileged-pods" in _decide(policy_gate, priv)["status"]["message"]
    bare = review(pod(init_image=PINNED, privileged=True), capability=token)
    assert _code(_decide(policy_gate, bare)) == "POLICY_FORBID"
    # deny images without a digest
    assert _code(_decide(policy_gate, review(deployment(image=UNPINNED), capability=token))) == (
        "POLICY_FORBID"
    )
    # permit only Deployments, only in shop, only the deployer
    assert _code(_decide(policy_gate, review(pod(), capability=token))) == "POLICY_NO_PERMIT"
    other_ns = review(deployment(namespace="billing"), capability=token)
    assert _code(_decide(policy_gate, other_ns)) == "POLICY_NO_PERMIT"
    intruder = "system:serviceaccount:shop:intruder"
    intruder_token = issue(principal_of(intruder), "k8s.create:K8sObject::*")
    doc = review(deployment(), username=intruder, capability=intruder_token)
    assert _code(_decide(policy_gate, doc)) == "POLICY_NO_PERMIT"
    # a token presented by someone else is not theirs
    doc = review(deployment(), username=intruder, capability=token)
    assert _code(_decide(policy_gate, doc)) == "IDENTITY_UNVERIFIED"
    # no capability
    assert _code(_decide(policy_gate, review(deployment()))) == "IDENTITY_UNVERIFIED"
    # the capability must cover the action
    create_only = issue(DEPLOYER_ID, "k8s.create:K8sObject::*")
    upd = review(deployment(), capability=create_only, operation="UPDATE", old=deployment())
    assert _code(_decide(policy_gate, upd)) == "CAPABILITY_INSUFFICIENT"


def test_the_example_policies_pass_policy_validate(home: Path) -> None:
    from tests.e2e.test_exec import cli

    pol = home / "policy" / "policies.cedar"
    pol.write_text(pol.read_text() + (KUBE / "policies" / "kubernetes.cedar").read_text())
    r = cli(home, "policy", "validate", str(home / "policy"))
    assert r.returncode == 0, r.stdout + r.stderr


# -- the generated certificate --------------------------------------------------------------------


def test_the_generated_certificate(tmp_path: Path) -> None:
    from cryptography import x509

    tls = ensure_admission_tls(tmp_path, ["interlock.interlock-system.svc"])
    assert tls.ca is not None
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE((tls.folder / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(tls.folder.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["interlock.interlock-system.svc"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert base64.b64decode(ca_bundle(tls.ca)) == tls.ca.read_bytes()
    # a second start keeps both; a new name re-issues the server certificate under the same CA
    before = {p.name: p.read_bytes() for p in tls.folder.iterdir()}
    ensure_admission_tls(tmp_path, ["interlock.interlock-system.svc"])
    assert {p.name: p.read_bytes() for p in tls.folder.iterdir()} == before
    ensure_admission_tls(tmp_path, ["interlock.interlock-system.svc", "webhook.example"])
    assert tls.ca.read_bytes() == before["ca.pem"]
    assert tls.cert.read_bytes() != before["server.pem"]
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    # a key another user could read is not used: a new CA is made
    (tls.folder / "ca.key").chmod(0o644)
    ensure_admission_tls(tmp_path, ["interlock.interlock-system.svc"])
    assert tls.ca.read_bytes() != before["ca.pem"]
    assert stat.S_IMODE((tls.folder / "ca.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["", "bad name", "-x.example", "a..b", "é.example"])
def test_a_bad_dns_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(TlsError):
        ensure_admission_tls(tmp_path, [name])


# -- the manifests --------------------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(KUBE.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _one(kind: str) -> dict[str, Any]:
    found = [d for d in _manifests() if d["kind"] == kind]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("version", ["1.31", "1.33"])
def test_the_manifests_validate(version: str) -> None:
    kinds = []
    for doc in _manifests():
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.append(doc["kind"])
    assert {"Namespace", "Deployment", "Service", "ValidatingWebhookConfiguration"} <= set(kinds)


def test_a_typo_would_be_caught() -> None:  # the validation above is not vacuous
    hook = _one("ValidatingWebhookConfiguration")
    hook["webhooks"][0]["sideEffectClass"] = "None"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hook, "1.31", strict=True)


def test_the_webhook_fails_closed_and_cannot_lock_interlock_out() -> None:
    (hook,) = _one("ValidatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert 1 <= hook["timeoutSeconds"] <= 10
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["clientConfig"]["service"] == {
        "namespace": "interlock-system",
        "name": "interlock",
        "path": "/v1/admission",
        "port": 443,
    }
    (expr,) = hook["namespaceSelector"]["matchExpressions"]
    assert expr["key"] == "kubernetes.io/metadata.name"
    assert expr["operator"] == "NotIn"
    assert set(expr["values"]) == {"interlock-system", "kube-system"}
    resources = {r for rule in hook["rules"] for r in rule["resources"]}
    assert {"pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs"} <= (
        resources
    )
    assert {"cronjobs", "replicationcontrollers", "pods/ephemeralcontainers"} <= resources
    assert _one("Namespace")["metadata"]["name"] == "interlock-system"


def test_the_deployment_is_locked_down_and_probed() -> None:
    dep = _one("Deployment")
    assert dep["metadata"]["namespace"] == "interlock-system"
    spec = dep["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    (c,) = spec["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "--admission=0.0.0.0:8443" in c["args"]
    svc = _one("Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == 443
