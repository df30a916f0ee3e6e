"""Signed bundles: every way a bundle can be wrong must refuse to load."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.core.canonical import canonical_bytes
from interlock.errors import PolicyError
from interlock.policy import (
    Manifest,
    PolicyBundle,
    PolicyEngine,
    load_bundle,
    sign_bundle,
    validate_bundle,
)
from interlock.trust.keys import public_raw

from .conftest import LEAD, write_bundle


def force_sign(directory: Path, key: Ed25519PrivateKey, manifest_bytes: bytes) -> None:
    """Sign arbitrary manifest bytes, skipping every check ``sign_bundle`` makes."""
    (directory / "manifest.json").write_bytes(manifest_bytes)
    sig = {"key": public_raw(key).hex(), "sig": base64.b64encode(key.sign(manifest_bytes)).decode()}
    (directory / "manifest.sig").write_bytes(canonical_bytes(sig))


def manifest_of(directory: Path, version: int = 1) -> bytes:
    files = {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", "manifest.sig")
    }
    return canonical_bytes({"v": 1, "version": version, "files": files})


def test_sign_then_load(default_dir: Path, key: Ed25519PrivateKey) -> None:
    manifest = sign_bundle(default_dir, key)
    bundle = load_bundle(default_dir, [key.public_key()])

    assert manifest.version == 1
    assert bundle.version == 1
    assert bundle.manifest == manifest
    raw = (default_dir / "manifest.json").read_bytes()
    assert raw == manifest.to_bytes()
    assert bundle.digest == hashlib.sha256(raw).hexdigest()
    assert set(bundle.files) == {
        "entities.json",
        "policies.cedar",
        "schema.cedarschema",
        "tests/cases.json",
    }
    assert bundle.signer == public_raw(key).hex()
    sig = json.loads((default_dir / "manifest.sig").read_bytes())
    assert set(sig) == {"key", "sig"}


def test_version_increments_and_never_goes_back(default_dir: Path, key: Ed25519PrivateKey) -> None:
    assert sign_bundle(default_dir, key).version == 1
    assert sign_bundle(default_dir, key).version == 2
    assert sign_bundle(default_dir, key, version=10).version == 10
    with pytest.raises(PolicyError, match="never go backwards"):
        sign_bundle(default_dir, key, version=10)
    with pytest.raises(PolicyError, match="never go backwards"):
        sign_bundle(default_dir, key, version=3)
    assert load_bundle(default_dir, [key.public_key()], min_version=10).version == 10


def test_version_below_minimum_refused(default_dir: Path, key: Ed25519PrivateKey) -> None:
    sign_bundle(default_dir, key, version=4)
    assert load_bundle(default_dir, [key.public_key()], min_version=4).version == 4
    with pytest.raises(PolicyError, match="older than the required 5"):
        load_bundle(default_dir, [key.public_key()], min_version=5)


def test_tampered_policy_file_refused(default_dir: Path, key: Ed25519PrivateKey) -> None:
    sign_bundle(default_dir, key)
    policy = default_dir / "policies.cedar"
    policy.write_text(policy.read_text().replace('"delete_database"', '"nothing"'))
    with pytest.raises(PolicyError, match="does not match the signed manifest") as info:
        load_bundle(default_dir, [key.public_key()])
    assert "interlock policy sign" in info.value.message


def test_tampered_test_case_refused(default_dir: Path, key: Ed25519PrivateKey) -> None:
    """tests/ is covered by the manifest too."""
    sign_bundle(default_dir, key)
    cases = default_dir / "tests" / "cases.json"
    cases.write_text(cases.read_text().replace('"allow"', '"deny"', 1))
    with pytest.raises(PolicyError, match="does not match"):
        load_bundle(default_dir, [key.public_key()])


@pytest.mark.parametrize(
    "extra", ["allow_all.cedar", "sub/dir/more.cedar", "tests/new.json", "other.cedarschema"]
)
def test_unlisted_policy_file_refused(
    default_dir: Path, key: Ed25519PrivateKey, extra: str
) -> None:
    sign_bundle(default_dir, key)
    path = default_dir / extra
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("permit(principal, action, resource);")
    with pytest.raises(PolicyError, match="not covered by the signed manifest"):
        load_bundle(default_dir, [key.public_key()])


def test_unlisted_other_file_is_ignored(default_dir: Path, key: Ed25519PrivateKey) -> None:
    """Only .cedar/.cedarschema/.json files are read; a stray README does not block loading."""
    sign_bundle(default_dir, key)
    (default_dir / "NOTES.txt").write_text("hello")
    assert "NOTES.txt" not in load_bundle(default_dir, [key.public_key()]).files


def test_missing_listed_file_refused(default_dir: Path, key: Ed25519PrivateKey) -> None:
    sign_bundle(default_dir, key)
    (default_dir / "tests" / "cases.json").unlink()
    with pytest.raises(PolicyError, match="listed in the signed manifest but missing"):
        load_bundle(default_dir, [key.public_key()])


def test_untrusted_key_refused(default_dir: Path, key: Ed25519PrivateKey) -> None:
    sign_bundle(default_dir, key)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(PolicyError, match="not a trusted policy key"):
        load_bundle(default_dir, [other.public_key()])
    assert load_bundle(default_dir, [other.public_key(), key.public_key()]).version == 1


def test_no_trusted_keys_refused(default_dir: Path, key: Ed25519PrivateKey) -> None:
    sign_bundle(default_dir, key)
    with pytest.raises(PolicyError, match="no trusted policy keys"):
        load_bundle(default_dir, [])


def test_signature_by_other_key_under_trusted_name_refused(
    default_dir: Path, key: Ed25519PrivateKey
) -> None:
    """manifest.sig names a trusted key but the signature was made by another key."""
    sign_bundle(default_dir, key)
    mallory = Ed25519PrivateKey.generate()
    data = (default_dir / "manifest.json").read_bytes()
    forged = {"key": public_raw(key).hex(), "sig": base64.b64encode(mallory.sign(data)).decode()}
    (default_dir / "manifest.sig").write_bytes(canonical_bytes(forged))
    with pytest.raises(PolicyError, match="signature does not verify"):
        load_bundle(default_dir, [key.public_key()])


def test_edited_manifest_refused(default_dir: Path, key: Ed25519PrivateKey) -> None:
    sign_bundle(default_dir, key)
    path = default_dir / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"version":1', b'"version":9'))
    with pytest.raises(PolicyError, match="signature does not verify"):
        load_bundle(default_dir, [key.public_key()])


@pytest.mark.parametrize(
    "sig",
    [b"not json", b"{}", b'{"key": "00", "sig": "%%%"}', b'{"key": 1, "sig": "AA=="}'],
)
def test_malformed_signature_file_refused(
    default_dir: Path, key: Ed25519PrivateKey, sig: bytes
) -> None:
    sign_bundle(default_dir, key)
    (default_dir / "manifest.sig").write_bytes(sig)
    with pytest.raises(PolicyError):
        load_bundle(default_dir, [key.public_key()])


def test_unsigned_folder_refused_with_hint(default_dir: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(PolicyError, match="not signed") as info:
        load_bundle(default_dir, [key.public_key()])
    assert "interlock policy sign" in info.value.message


def test_not_a_directory(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(PolicyError, match="not a directory"):
        load_bundle(tmp_path / "missing", [key.public_key()])


def test_schema_invalid_policy_refused_at_load(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    bad = '@id("bad") permit(principal, action == Action::"tool.call", resource) '
    bad += 'when { context.args.x == "a string" };'
    folder = write_bundle(tmp_path / "b", bad)
    # sign_bundle refuses to sign it ...
    with pytest.raises(PolicyError, match="does not validate against the schema"):
        sign_bundle(folder, key)
    # ... and a bundle signed some other way still does not load.
    force_sign(folder, key, manifest_of(folder))
    with pytest.raises(PolicyError, match="'bad' does not validate against the schema"):
        load_bundle(folder, [key.public_key()])


_BAD_ENTITY = json.dumps([{"uid": {"type": "Nope", "id": "x"}, "attrs": {}, "parents": []}])
_DUPLICATE_IDS = (
    '@id("a") permit(principal, action, resource);\n@id("a") forbid(principal, action, resource);'
)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("policies.cedar", "permit(principal, action, resource) when { 1 + };", "cannot parse"),
        ("schema.cedarschema", "entity ;", "schema.cedarschema"),
        ("entities.json", _BAD_ENTITY, "entities.json"),
        ("policies.cedar", "permit(principal == ?principal, action, resource);", "templates"),
        ("policies.cedar", _DUPLICATE_IDS, "also used"),
    ],
)
def test_invalid_contents_refused_at_load(
    tmp_path: Path, key: Ed25519PrivateKey, file: str, content: str, message: str
) -> None:
    folder = write_bundle(tmp_path / "b", "permit(principal, action, resource);")
    (folder / file).write_text(content)
    force_sign(folder, key, manifest_of(folder))
    with pytest.raises(PolicyError, match=message):
        load_bundle(folder, [key.public_key()])
    assert validate_bundle(folder)


def test_missing_schema_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    folder = write_bundle(tmp_path / "b", "permit(principal, action, resource);")
    (folder / "schema.cedarschema").unlink()
    force_sign(folder, key, manifest_of(folder))
    with pytest.raises(PolicyError, match=r"no schema\.cedarschema"):
        load_bundle(folder, [key.public_key()])


@pytest.mark.parametrize("path", ["../escape.cedar", "/etc/passwd", "a/./b.cedar", "a\\b.cedar"])
def test_manifest_path_traversal_refused(tmp_path: Path, key: Ed25519PrivateKey, path: str) -> None:
    folder = write_bundle(tmp_path / "b", "permit(principal, action, resource);")
    data = canonical_bytes({"v": 1, "version": 1, "files": {path: "0" * 64}})
    force_sign(folder, key, data)
    with pytest.raises(PolicyError, match="invalid path"):
        load_bundle(folder, [key.public_key()])


def test_non_canonical_manifest_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    folder = write_bundle(tmp_path / "b", "permit(principal, action, resource);")
    pretty = json.dumps(json.loads(manifest_of(folder)), indent=2).encode()
    force_sign(folder, key, pretty)
    with pytest.raises(PolicyError, match="canonical"):
        load_bundle(folder, [key.public_key()])


def test_symlink_refused(default_dir: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    sign_bundle(default_dir, key)
    (tmp_path / "outside.cedar").write_text("permit(principal, action, resource);")
    os.symlink(tmp_path / "outside.cedar", default_dir / "link.cedar")
    with pytest.raises(PolicyError, match="symbolic link"):
        load_bundle(default_dir, [key.public_key()])
    with pytest.raises(PolicyError, match="symbolic link"):
        sign_bundle(default_dir, key)


def test_manifest_values_checked() -> None:
    with pytest.raises(PolicyError, match="version"):
        Manifest(version=0, files={})
    with pytest.raises(PolicyError, match="version"):
        Manifest(version=True, files={})
    with pytest.raises(PolicyError, match="sha256"):
        Manifest(version=1, files={"a.cedar": "ABC"})
    with pytest.raises(PolicyError, match="v1 manifest"):
        Manifest.from_bytes(canonical_bytes({"v": 2, "version": 1, "files": {}}))


def test_blob_round_trip(default_dir: Path, key: Ed25519PrivateKey) -> None:
    sign_bundle(default_dir, key)
    bundle = load_bundle(default_dir, [key.public_key()])
    blob = bundle.to_blob()

    again = PolicyBundle.from_blob(blob, [key.public_key()])
    assert again == bundle
    assert again.to_blob() == blob
    assert again.digest == bundle.digest
    request = {
        "principal": LEAD,
        "action": "tool.call",
        "resource_type": "Tool",
        "resource_id": "delete_database",
        "args": {},
        "context": {},
        "now": 0,
    }
    assert PolicyEngine.from_bundle(again).evaluate(**request) == PolicyEngine.from_bundle(
        bundle
    ).evaluate(**request)


def test_blob_reverified(default_dir: Path, key: Ed25519PrivateKey) -> None:
    sign_bundle(default_dir, key)
    blob = json.loads(load_bundle(default_dir, [key.public_key()]).to_blob())

    with pytest.raises(PolicyError, match="not a trusted policy key"):
        PolicyBundle.from_blob(canonical_bytes(blob), [Ed25519PrivateKey.generate().public_key()])

    tampered = dict(blob, files=dict(blob["files"]))
    tampered["files"]["policies.cedar"] = base64.b64encode(b"permit(principal,action,resource);")
    tampered["files"]["policies.cedar"] = tampered["files"]["policies.cedar"].decode()
    with pytest.raises(PolicyError, match="does not match the signed manifest"):
        PolicyBundle.from_blob(canonical_bytes(tampered), [key.public_key()])

    extra = dict(blob, files=dict(blob["files"], **{"x.cedar": ""}))
    with pytest.raises(PolicyError, match="does not list"):
        PolicyBundle.from_blob(canonical_bytes(extra), [key.public_key()])

    with pytest.raises(PolicyError, match="older"):
        PolicyBundle.from_blob(canonical_bytes(blob), [key.public_key()], min_version=2)

    for junk in (b"", b"[]", b'{"v": 1}'):
        with pytest.raises(PolicyError):
            PolicyBundle.from_blob(junk, [key.public_key()])


def test_validate_bundle(default_dir: Path) -> None:
    assert validate_bundle(default_dir) == []
    (default_dir / "more.cedar").write_text(
        '@id("typo") permit(principal, action == Action::"tool.cal", resource);'
    )
    problems = validate_bundle(default_dir)
    assert problems
    assert all("typo" in p for p in problems)
