"""AdmissionReview documents as the Kubernetes API server sends them to a validating webhook
(``admission.k8s.io/v1``), with the objects built by the official ``kubernetes`` client's
models and serialized as the client serializes them (``ApiClient().sanitize_for_serialization``).

    body = review(deployment(), username=DEPLOYER, capability=token)
"""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes import client as k8s

DEPLOYER = "system:serviceaccount:shop:deployer"
DEPLOYER_ID = "spiffe://cluster.local/ns/shop/sa/deployer"
PINNED = "registry.example/shop/web@sha256:" + "ab" * 32
UNPINNED = "nginx:1.27"

_API = k8s.ApiClient()
_RESOURCES = {
    "Pod": "pods",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "ReplicaSet": "replicasets",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "ReplicationController": "replicationcontrollers",
    "ConfigMap": "configmaps",
}


def pod_spec(
    image: str = PINNED,
    *,
    privileged: bool | None = None,
    init_image: str | None = None,
    run_as_user: int | None = None,
    host_network: bool | None = None,
) -> k8s.V1PodSpec:
    init = None
    if init_image is not None:
        init = [
            k8s.V1Container(
                name="init",
                image=init_image,
                security_context=k8s.V1SecurityContext(privileged=privileged),
            )
        ]
        privileged = None
    return k8s.V1PodSpec(
        init_containers=init,
        containers=[
            k8s.V1Container(
                name="app",
                image=image,
                ports=[k8s.V1ContainerPort(container_port=8080)],
                security_context=k8s.V1SecurityContext(
                    privileged=privileged, run_as_user=run_as_user
                ),
            )
        ],
        host_network=host_network,
    )


def pod(name: str = "web-1", namespace: str = "shop", **spec: Any) -> k8s.V1Pod:
    return k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels={"app": "web"}),
        spec=pod_spec(**spec),
    )


def deployment(name: str = "web", namespace: str = "shop", **spec: Any) -> k8s.V1Deployment:
    labels = {"app": name}
    return k8s.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
        spec=k8s.V1DeploymentSpec(
            replicas=2,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels), spec=pod_spec(**spec)
            ),
        ),
    )


def cronjob(name: str = "nightly", namespace: str = "shop", **spec: Any) -> k8s.V1CronJob:
    pod_template = pod_spec(**spec)
    pod_template.restart_policy = "OnFailure"
    return k8s.V1CronJob(
        api_version="batch/v1",
        kind="CronJob",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace),
        spec=k8s.V1CronJobSpec(
            schedule="0 3 * * *",
            job_template=k8s.V1JobTemplateSpec(
                spec=k8s.V1JobSpec(template=k8s.V1PodTemplateSpec(spec=pod_template))
            ),
        ),
    )


def serialize(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = _API.sanitize_for_serialization(obj)
    return out


def review(
    obj: Any,
    *,
    username: str = DEPLOYER,
    capability: str | None = None,
    operation: str = "CREATE",
    old: Any = None,
    dry_run: bool = False,
    uid: str | None = None,
    groups: list[str] | None = None,
) -> dict[str, Any]:
    """The AdmissionReview the API server posts for ``operation`` on ``obj`` (a client model;
    for DELETE, ``obj`` is the object being deleted and goes in ``oldObject``)."""
    doc = serialize(obj)
    group, _, version = doc["apiVersion"].rpartition("/")
    kind = doc["kind"]
    meta = doc.get("metadata", {})
    gvk = serialize(k8s.V1GroupVersionKind(group=group, version=version, kind=kind))
    gvr = {"group": group, "version": version, "resource": _RESOURCES[kind]}
    extra: dict[str, list[str]] = {
        "authentication.kubernetes.io/credential-id": ["JTI=7f3e1c2a-0000-4000-8000-000000000000"]
    }
    if capability is not None:
        extra["interlock.dev/capability"] = [capability]
    user = k8s.V1UserInfo(
        username=username,
        uid=str(uuid.uuid5(uuid.NAMESPACE_URL, username)),
        groups=groups
        if groups is not None
        else ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"],
        extra=extra,
    )
    options_kind = {"DELETE": "DeleteOptions", "UPDATE": "UpdateOptions"}.get(
        operation, "CreateOptions"
    )
    options: dict[str, Any] = {"kind": options_kind, "apiVersion": "meta.k8s.io/v1"}
    if operation != "DELETE":
        options["fieldManager"] = "kubectl-client-side-apply"
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", ""),
        "operation": operation,
        "userInfo": serialize(user),
        "object": None if operation == "DELETE" else doc,
        "oldObject": doc if operation == "DELETE" else (serialize(old) if old else None),
        "dryRun": dry_run,
        "options": options,
    }
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}
