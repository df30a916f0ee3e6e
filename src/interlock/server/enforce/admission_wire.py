"""The ``AdmissionReview`` v1 a Kubernetes API server posts to the validating webhook
(:mod:`.admission`), as strict pydantic models of ``k8s.io/api/admission/v1`` (``types.go``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DNS_LABEL",
    "AdmissionRequest",
    "AdmissionReview",
    "GroupVersionKind",
    "GroupVersionResource",
    "UserInfo",
]

#: an RFC 1123 label (a namespace, a service account, a part of an API group)
DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"

# Fields Kubernetes marks omitempty default; the others are required. Unknown fields are
# allowed (newer API servers add some); types are strict (no "true" for true).


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True, populate_by_name=True)


_GROUP = rf"^({DNS_LABEL}(\.{DNS_LABEL})*)?$"  # "" is the core group
_VERSION = r"^[a-z0-9]+$"


class GroupVersionKind(_Model):
    group: str = Field(max_length=253, pattern=_GROUP)
    version: str = Field(min_length=1, max_length=63, pattern=_VERSION)
    kind: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z][A-Za-z0-9]*$")


class GroupVersionResource(_Model):
    group: str = Field(max_length=253, pattern=_GROUP)
    version: str = Field(min_length=1, max_length=63, pattern=_VERSION)
    resource: str = Field(min_length=1, max_length=253)


class UserInfo(_Model):
    username: str = Field("", max_length=512)
    uid: str = Field("", max_length=512)
    groups: list[str] = Field(default_factory=list, max_length=256)
    extra: dict[str, list[str]] = Field(default_factory=dict, max_length=64)


class AdmissionRequest(_Model):
    uid: str = Field(min_length=1, max_length=128)
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: str = Field("", max_length=253)  # noqa: N815 - Kubernetes' field names
    requestKind: GroupVersionKind | None = None  # noqa: N815
    requestResource: GroupVersionResource | None = None  # noqa: N815
    requestSubResource: str = Field("", max_length=253)  # noqa: N815
    # names cannot contain '/' (apimachinery path segment names), so the resource id splits
    name: str = Field("", max_length=253, pattern=r"^[^/%]*$")
    namespace: str = Field("", max_length=63, pattern=rf"^({DNS_LABEL})?$")
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    userInfo: UserInfo  # noqa: N815
    object_: dict[str, Any] | None = Field(None, alias="object")
    oldObject: dict[str, Any] | None = None  # noqa: N815
    dryRun: bool = False  # noqa: N815
    options: dict[str, Any] | None = None


class AdmissionReview(_Model):
    apiVersion: Literal["admission.k8s.io/v1"]  # noqa: N815
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest
