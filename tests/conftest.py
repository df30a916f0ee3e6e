"""Shared fixtures: real homes, real keys, real SQLite, real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings

from interlock.ledger.note import NoteSigner, NoteVerifier

# CI runs the same examples every time (a failure there is reproducible, never a lucky draw);
# developers get fresh random examples on each run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

RESEARCHER = "spiffe://acme.test/agent/researcher"
SUMMARIZER = "spiffe://acme.test/agent/researcher/summarizer"


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner("interlock.test/log", Ed25519PrivateKey.generate())


@pytest.fixture
def verifier(signer: NoteSigner) -> NoteVerifier:
    return NoteVerifier.from_vkey(signer.vkey)


# -- PostgreSQL: each test gets a database of its own, dropped afterwards ------------------------

#: the server the tests use (trust auth); ``make test`` starts one if none runs
PG_ADMIN_URL = os.environ.get("INTERLOCK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin() -> Any:
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}\nThe tests need a real"
            " server on 127.0.0.1:5432 with trust auth and a database `test`: run"
            " scripts/ensure-postgres.sh (make test does), or set INTERLOCK_TEST_PG.",
            pytrace=False,
        )


def new_pg_database() -> str:
    """Create a database ``interlock_t_<hex>`` and return its URL."""
    from urllib.parse import urlsplit, urlunsplit

    name = f"interlock_t_{secrets.token_hex(6)}"
    with _pg_admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(PG_ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def drop_pg_database(url: str) -> None:
    from urllib.parse import urlsplit

    name = urlsplit(url).path.lstrip("/")
    assert re.fullmatch(r"interlock_t_[0-9a-f]{12}", name), name
    with _pg_admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test's own, dropped at teardown."""
    url = new_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


class Backend:
    """One storage driver at one location, and what an attacker (or another process) with
    access to the database can do there, in either dialect: ``?`` placeholders and SQLite's
    ``x'..'`` blob literals are translated for PostgreSQL."""

    def __init__(self, kind: str, location: Path | str, made: list[str]) -> None:
        self.kind = kind
        self.location = location
        self._made = made

    def open(self, **kw: Any) -> Any:
        from interlock.ledger.storage import open_store

        kw.setdefault("signer", None)
        kw.setdefault("durability", "full")
        return open_store(self.location, **kw)

    def fresh(self, name: str) -> Backend:
        """Another, empty location of the same kind (``name``: the SQLite file's)."""
        if self.kind == "sqlite":
            assert isinstance(self.location, Path)
            return Backend("sqlite", self.location.parent / name, self._made)
        url = new_pg_database()
        self._made.append(url)
        return Backend("postgres", url, self._made)

    def _pg(self, statement: str) -> str:
        statement = re.sub(r"x'([0-9a-fA-F]*)'", r"'\\x\1'::bytea", statement)
        statement = re.sub(
            r"DROP TRIGGER (IF EXISTS )?(\w+)_no_(update|delete)",
            r"DROP TRIGGER \1\2_no_\3 ON \2",
            statement,
        )
        return statement.replace("?", "%s")

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.location, isolation_level=None)
            try:
                yield conn
            finally:
                conn.close()
            return
        import psycopg

        assert isinstance(self.location, str)
        with psycopg.connect(self.location, autocommit=True) as conn:
            yield conn

    def execute(self, *statements: str | tuple[str, Sequence[Any]]) -> None:
        """Run statements (text, or ``(text, params)``) each in its own transaction."""
        with self.connect() as conn:
            for s in statements:
                text, params = (s, ()) if isinstance(s, str) else s
                conn.execute(text if self.kind == "sqlite" else self._pg(text), tuple(params))

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            text = statement if self.kind == "sqlite" else self._pg(statement)
            return [tuple(r) for r in conn.execute(text, tuple(params)).fetchall()]

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[Any]:
        """Hold what an appender needs (SQLite's write lock; PostgreSQL's counter row) from
        another connection; yields ``(take, give)`` to take and release it again."""
        with self.connect() as conn:
            if self.kind == "sqlite":
                take = ["BEGIN IMMEDIATE"]
            else:
                take = ["BEGIN", "SELECT next FROM sequence WHERE id = 1 FOR UPDATE"]

            def hold() -> None:
                for s in take:
                    conn.execute(s)

            def give() -> None:
                conn.execute("ROLLBACK")

            hold()
            try:
                yield hold, give
            finally:
                with contextlib.suppress(Exception):
                    give()

    @property
    def refusal(self) -> type[Exception]:
        """What the append-only triggers raise."""
        if self.kind == "sqlite":
            return sqlite3.IntegrityError
        import psycopg

        return psycopg.Error


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each storage driver in turn (a test about the Store protocol runs on both)."""
    made: list[str] = []
    if request.param == "sqlite":
        yield Backend("sqlite", tmp_path / "ledger.db", made)
    else:
        url = new_pg_database()
        made.append(url)
        yield Backend("postgres", url, made)
    for url in made:
        drop_pg_database(url)


@pytest.fixture
def ledger(backend: Backend, signer: NoteSigner) -> Iterator[Any]:
    led = backend.open(signer=signer, create=True)
    yield led
    led.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh governance home (keys, config, signed default policy, ledger)."""
    from interlock.bootstrap import init_home

    home = init_home(tmp_path / "home", origin="interlock.test/home").path
    # A 50 ms decision deadline is right for production and a source of flaky denials on a
    # loaded 2-core CI machine; tests about the deadline set their own.
    edit_config(home, "deadline_ms = 50", "deadline_ms = 2000")
    return home


def edit_config(home: Path, old: str, new: str) -> None:
    """Replace the first ``old`` in ``interlock.toml`` with ``new``, trust the resulting
    platform and record the trust settings on the ledger with the root key, as an operator
    would with `interlock attest trust` / `interlock trust adopt` (a changed config is a
    changed measurement, and trust settings live on the log: without this the gate would deny
    ENVIRONMENT_UNTRUSTED, as it must)."""
    cfg = home / "interlock.toml"
    text = cfg.read_text()
    assert old in text, f"{old!r} is not in interlock.toml"
    cfg.write_text(text.replace(old, new, 1))
    trust_config(home)


def trust_config(home: Path) -> None:
    """What an operator does after an intended edit of ``interlock.toml``: trust the new
    platform (`interlock attest trust`) and record the trust settings on the ledger with the
    root key (`interlock trust adopt`)."""
    from interlock.audit import open_for_audit
    from interlock.governance import adopt_changes, record_trust
    from interlock.trust.attestation import trust_current

    trust_current(home / "interlock.toml")
    with open_for_audit(home, sign=True) as view:
        record_trust(
            view.ledger, view.home, adopt_changes(view.ledger, view.home), ns=time.time_ns()
        )


def code_forms(*argv: str) -> list[str]:
    """The code-running forms of ``argv`` as ``interlock exec`` decides it on this machine (its
    executable resolved: ``sh`` may be ``dash``), for an agent's ``interpreters`` attribute."""
    import shutil

    from interlock.core.command import canonical_command

    found = shutil.which(argv[0])
    exe = os.path.realpath(found) if found else None
    forms = set(canonical_command(list(argv), exe).interpreters)
    return sorted(forms | set(canonical_command(list(argv)).interpreters))


def allow_code(home: Path, principal: str, forms: Sequence[str]) -> None:
    """What an operator does to let ``principal`` run these code-running command forms (e.g.
    ``["python3 -c"]``) past the default policy's ``no-code-unless-allowed``: list them in the
    agent's ``interpreters`` attribute in entities.json, and sign the bundle (next version)."""
    from interlock.home import Home
    from interlock.policy.bundle import sign_bundle

    path = home / "policy" / "entities.json"
    entities = json.loads(path.read_text())
    for entity in entities:
        if entity["uid"] == {"type": "Agent", "id": principal}:
            entity["attrs"]["interpreters"] = sorted(forms)
            break
    else:
        raise AssertionError(f"{principal} is not in entities.json")
    path.write_text(json.dumps(entities, indent=2))
    sign_bundle(home / "policy", Home.load(home).private_key("policy"))


@pytest.fixture
def issue(home: Path):  # type: ignore[no-untyped-def]
    """Issue a real Biscuit token from the home's root key: issue(principal, *rights, ttl=...)."""
    from interlock.capability import CapabilityIssuer, Right
    from interlock.home import Home
    from interlock.trust import keys

    h = Home.load(home)
    issuer = CapabilityIssuer(keys.private_raw(h.private_key("biscuit-root")))

    def _issue(
        principal: str = RESEARCHER, *rights: str, ttl: timedelta = timedelta(minutes=15)
    ) -> str:
        rs = [Right.parse(r) for r in (rights or ("tool.call:Tool::*",))]
        return issuer.issue(principal=principal, rights=rs, expires_at=datetime.now(UTC) + ttl)

    return _issue


def tool_request(
    token: str | None,
    tool: str = "web_search",
    principal: str = RESEARCHER,
    parent: str | None = None,
    **extra: object,
) -> dict[str, object]:
    req: dict[str, object] = {
        "principal": principal,
        "action": "tool.call",
        "resource": {"type": "Tool", "id": tool},
        "args": {"q": "x"},
    }
    if token is not None:
        req["capability"] = token
    if parent is not None:
        req["parent"] = parent
    req.update(extra)
    return req


# -- shared by the SDK and adapter tests ----------------------------------------------------------


@pytest.fixture
def gate(home: Path) -> Iterator[Any]:
    """An open gate on the fresh home."""
    from interlock.gate import Gate

    with Gate.open(home) as g:
        yield g


@pytest.fixture
def researcher(gate: Any, issue: Any) -> Any:
    """The lead researcher's agent handle, with a tool.call:Tool::* capability."""
    from interlock.adapters.sdk import Agent

    agent = gate.agent(RESEARCHER, issue())
    assert isinstance(agent, Agent)
    return agent


def records(gate: Any, exec_id: str) -> dict[str, dict[str, Any]]:
    """The ledger records of one execution, by type."""
    out: dict[str, dict[str, Any]] = {}
    for _i, _h, data in gate.ledger.iter_entries(0):
        rec = json.loads(data)
        if rec.get("id") == exec_id:
            out[rec["type"]] = rec
    return out


def recorded_args(gate: Any, exec_id: str) -> Any:
    """The arguments recorded (in the payload blob) for a request."""
    blob = gate.ledger.blob(f"req:{exec_id}")
    assert blob is not None
    return json.loads(blob)["args"]
