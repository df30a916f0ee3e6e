"""Write the seed corpus: real valid inputs and near-misses for every fuzz target.

    python -m tests.fuzz.seeds      # rewrites tests/fuzz/corpus/*/seed-* and issued.json

Valid inputs are signed with the fixed keys of :mod:`tests.fuzz.targets`; ``issued.json``
lists what those keys signed that is not deterministic (the capability tokens: Biscuit blocks
carry fresh ephemeral keys) so that the targets can tell a genuine token from a forged one.
Findings are kept beside the seeds as ``crash-*`` files and never rewritten.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

from interlock.capability import attenuate, inspect
from interlock.trust.receipt import encode_receipt, make_receipt
from tests.fuzz import targets as t

_OTHER = "spiffe://acme.test/agent/summarizer"


def _req(**fields: object) -> bytes:
    doc: dict[str, object] = {
        "principal": t.RESEARCHER,
        "action": "tool.call",
        "resource": {"type": "Tool", "id": "web_search"},
    }
    doc.update(fields)
    return json.dumps(doc).encode()


def _flip(data: bytes, at: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def intake(tokens: dict[str, str]) -> Iterator[tuple[str, bytes]]:
    good = tokens["tools"]
    yield "valid-allow", _req(capability=good, args={"q": "cedar"})
    yield "valid-forbid", _req(capability=good, resource={"type": "Tool", "id": "delete_database"})
    yield (
        "valid-shell",
        _req(
            capability=tokens["any"],
            action="shell.exec",
            resource={"type": "Host", "id": "localhost"},
            args={"argv": ["rm", "-rf", "/tmp/x"]},
        ),
    )
    yield (
        "valid-parent",
        _req(
            capability=good,
            parent="0190b3f6-7a1c-7000-8000-0000000000aa",
            traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
            context={"k": [1, 2, {"x": None}]},
        ),
    )
    yield "valid-other-principal", _req(principal=_OTHER, capability=good)
    yield "valid-no-capability", _req()
    yield "miss-duplicate-key", b'{"principal":"a","principal":"b","action":"x","resource":{}}'
    yield "miss-invalid-utf8", _req(capability=good).replace(b"web_search", b"web\xff\xfe")
    yield "miss-nul", _req(args={"q": "a\u0000b"}).replace(b"web_search", b"web\\u0000x")
    yield "miss-lone-surrogate", _req(args={"q": "\\ud800"}).replace(b"\\\\ud800", b"\\ud800")
    yield "miss-deep", _req(args={"a": json.loads("[" * 40 + "]" * 40)})
    yield "miss-big-int", _req(args={"n": 2**60})
    yield "miss-nan", _req(args={"n": 1}).replace(b'"n": 1', b'"n": NaN')
    yield "miss-unknown-field", _req(id="x")
    yield (
        "miss-zero-width-id",
        _req(capability=good, resource={"type": "Tool", "id": "web\u200bsearch"}),
    )
    yield "miss-dot-segment", _req(capability=good, resource={"type": "Tool", "id": "a/../b"})
    yield "miss-case-id", _req(capability=good, resource={"type": "Tool", "id": "Delete_Database"})
    yield (
        "miss-command-sent",
        _req(
            action="shell.exec", resource={"type": "Host", "id": "localhost"}, args={"command": {}}
        ),
    )
    yield "miss-bad-capability", _req(capability=good[:-3] + "!!!")
    yield "miss-oversized", _req(args={"q": "x" * (64 * 1024)})


def capability(tokens: dict[str, str]) -> Iterator[tuple[str, bytes]]:
    for name, token in tokens.items():
        yield f"valid-{name}", token.encode()
    good = tokens["tools"].encode()
    yield "miss-truncated", good[: len(good) // 2]
    yield "miss-flipped-signature", _flip(good, len(good) - 10)
    yield "miss-flipped-block", _flip(good, 40)
    yield "miss-padded", good + b"=="
    yield "miss-standard-base64", good.replace(b"-", b"+").replace(b"_", b"/")
    yield "miss-non-ascii", good[:20] + "é".encode() + good[20:]
    yield "miss-empty", b""
    yield "miss-not-biscuit", base64.urlsafe_b64encode(b"\x0a\x05hello" * 10)


def policy() -> Iterator[tuple[str, bytes]]:
    blob = t.policy().bundle.to_blob()
    yield "valid-default", blob
    doc = json.loads(blob)
    doc2 = json.loads(blob)
    doc2["manifest"]["version"] = 2
    yield "miss-version-changed", json.dumps(doc2).encode()
    doc3 = json.loads(blob)
    name = sorted(doc3["files"])[0]
    doc3["files"][name] = base64.b64encode(b"permit (principal, action, resource);").decode()
    yield "miss-file-changed", json.dumps(doc3).encode()
    doc4 = json.loads(blob)
    doc4["files"]["extra.cedar"] = base64.b64encode(
        b"permit (principal, action, resource);"
    ).decode()
    yield "miss-extra-file", json.dumps(doc4).encode()
    doc5 = json.loads(blob)
    doc5["signature"] = json.dumps(doc5["signature"]).replace("a", "b")
    yield "miss-signature", json.dumps(doc5).encode()
    yield "miss-truncated", blob[: len(blob) // 2]
    yield "miss-v2", json.dumps({**doc, "v": 2}).encode()


def proof() -> Iterator[tuple[str, bytes]]:
    for index, size in ((0, 1), (1, 2), (2, 3), (5, 7), (7, 8), (10, 11), (0, 11)):
        yield f"valid-{index}-of-{size}", t.proof_text(index, size).encode()
    text = t.proof_text(5, 7)
    lines = text.split("\n")
    yield "miss-index", text.replace("index 5", "index 4").encode()
    yield "miss-index-leading-zero", text.replace("index 5", "index 05").encode()
    yield "miss-hash", "\n".join([*lines[:3], lines[4], lines[3], *lines[5:]]).encode()
    yield "miss-no-extra", "\n".join([lines[0], *lines[2:]]).encode()
    yield "miss-crlf", text.replace("\n", "\r\n").encode()
    yield "miss-no-checkpoint", "\n".join(lines[:6]).encode() + b"\n\n"


def receipt() -> Iterator[tuple[str, bytes]]:
    for i, record in enumerate(t.RECEIPT_RECORDS):
        env = make_receipt(record, signer=t.NODE, ledger_index=i, log_origin=t.ORIGIN)
        yield f"valid-{i}", encode_receipt(env).encode()
    env = make_receipt(t.RECEIPT_RECORDS[0], signer=t.NODE, ledger_index=0, log_origin=t.ORIGIN)
    text = encode_receipt(env)
    yield "miss-keyid-empty", text.replace(env["signatures"][0]["keyid"], "").encode()
    sig = env["signatures"][0]["sig"]
    yield (
        "miss-sig",
        text.replace(sig, sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]).encode(),
    )
    payload = env["payload"]
    body = base64.b64decode(payload).replace(b'"allow"', b'"deny"')
    yield "miss-payload", text.replace(payload, base64.b64encode(body).decode()).encode()
    yield "miss-duplicate", text.replace('{"payload"', '{"payload":"","payload"', 1).encode()
    yield "miss-url-safe", text.replace(sig, sig.replace("+", "-").replace("/", "_")).encode()
    yield "miss-no-padding", text.replace(sig, sig.rstrip("=")).encode()


def checkpoint() -> Iterator[tuple[str, bytes]]:
    for size in t.SIZES:
        yield f"valid-{size}", t.signed_checkpoint(size).encode()
    yield "valid-vkey", t.LOG.vkey.encode()
    yield "valid-body", t._checkpoint(3).body().encode()
    note = t.signed_checkpoint(7)
    other = t.NoteSigner(t.ORIGIN, t.fixed_key("other")).sign(t._checkpoint(7).body())
    yield "miss-other-key", other.encode()
    yield "miss-two-signatures", (note + other.split("\n\n")[1]).encode()
    yield "miss-size", note.replace("\n7\n", "\n6\n").encode()
    yield "miss-leading-zero", note.replace("\n7\n", "\n07\n").encode()
    yield "miss-no-blank", note.replace("\n\n", "\n").encode()
    yield "miss-extension", note.replace("\n\n", "\nextension\n\n").encode()
    yield "miss-control", note.replace("fuzz", "fu\x01z").encode()


def main() -> None:
    tokens = {
        "tools": t.issued_token(),
        "any": t.issued_token(rights=("*:*",)),
        "narrow": t.issued_token(rights=("tool.call:Tool::summarize",)),
        "other": t.issued_token(_OTHER),
    }
    tokens["attenuated"] = attenuate(
        tokens["tools"],
        root_public_raw=t.ROOT_PUBLIC,
        rights=[t.Right.parse("tool.call:Tool::web_search")],
        parent="0190b3f6-7a1c-7000-8000-0000000000aa",
    )
    seeds = {
        "intake": intake(tokens),
        "capability": capability(tokens),
        "policy": policy(),
        "proof": proof(),
        "receipt": receipt(),
        "checkpoint": checkpoint(),
    }
    for target, items in seeds.items():
        folder = t.CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for name, data in items:
            (folder / f"seed-{name}").write_bytes(data)
    issued = {
        "authority_revocation_ids": sorted(
            {inspect(tok, t.ROOT_PUBLIC).revocation_ids[0] for tok in tokens.values()}
        ),
        "policy_digests": [t.policy().bundle.digest],
    }
    t.ISSUED.write_text(json.dumps(issued, indent=2) + "\n")
    print(f"wrote {sum(1 for _ in t.CORPUS.glob('*/seed-*'))} seeds to {t.CORPUS}")


if __name__ == "__main__":
    main()
