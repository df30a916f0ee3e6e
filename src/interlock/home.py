"""A governance home: keys, configuration, the signed policy bundle and the ledger.

    >>> from pathlib import Path
    >>> import tempfile
    >>> home = create_home(Path(tempfile.mkdtemp()) / "gov")
    >>> sorted(p.name for p in (home.path / "keys").iterdir())
    ['biscuit-root.key', 'log.key', 'node.key', 'policy.key']

Layout::

    <home>/interlock.toml        log origin, durability, deadlines, trusted policy keys
    <home>/keys/*.key            Ed25519 private keys, mode 0600, folder 0700, never overwritten
    <home>/policy/               the active signed policy bundle
    <home>/ledger.db             the ledger (SQLite, WAL), mode 0600 — unless ``[log] store``
                                 names a shared PostgreSQL log instead
    <home>/checkpoint            the newest checkpoint seen, kept outside the ledger

The home is chosen by ``--home DIR``, else ``INTERLOCK_HOME``, else ``./.interlock``.

:meth:`Home.load` refuses a home the governed agent could have tampered with (issue 9): its
folders and files must be this user's, not writable by group or others, and no FIFO, device or
link may stand in for any of them (:mod:`interlock.trust.files`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from interlock import home_sections
from interlock.containment import Settings as ExecSettings
from interlock.core.boundary import Boundary, parse_boundaries
from interlock.errors import ConfigError, HomeExists, HomeMissing, KeyFileError
from interlock.trust import keys
from interlock.trust.files import (
    MAX_ANCHOR_BYTES,
    MAX_CONFIG_BYTES,
    check_home_dir,
    check_private_file,
    read_private_text,
)

__all__ = ["Config", "Home", "create_home", "default_home", "join_home"]

CONFIG_NAME = "interlock.toml"
ANCHOR_NAME = "checkpoint"
LEDGER_NAME = "ledger.db"
#: the ledger and the files SQLite keeps beside it (they get the database file's mode)
_LEDGER_FILES = (LEDGER_NAME, f"{LEDGER_NAME}-wal", f"{LEDGER_NAME}-shm")
# a C2SP note key name (no space, no '+') that is also safe inside a TOML string
_ORIGIN_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,255}\Z")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")
KEY_NAMES = ("log", "policy", "biscuit-root", "node")
DEFAULT_POLICY_DIR = Path(__file__).parent / "policy" / "default"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """``interlock.toml``. Every field has a safe default except the log origin."""

    origin: str
    durability: str = "full"
    #: ``[log] store``: a ``postgresql://`` URL of a shared log; None: the home's SQLite file
    store: str | None = None
    #: ``[log] lease_ms``: how long a node on a shared store may go without confirming that it
    #: holds the log's head before it denies everything (POLICY_STALE); unused on SQLite
    lease_ms: int = 2000
    deadline_ms: int = 50
    ledger_timeout_ms: int = 2000
    max_lineage_depth: int = 16
    ledger_check_interval_ms: int = 5000
    trusted_policy_keys: tuple[str, ...] = ()
    #: hex Ed25519 public keys whose approvals (``interlock approve``) are trusted
    approver_keys: tuple[str, ...] = ()
    #: hex Ed25519 public keys whose break-glass overrides (``interlock break-glass``) are trusted
    break_glass_keys: tuple[str, ...] = ()
    #: platform digests (``interlock attest show``) this node may run as
    trusted_platforms: tuple[str, ...] = ()
    #: deny everything (ENVIRONMENT_UNTRUSTED) when the platform is not trusted; when false,
    #: policies and boundaries see ``context.env.attested == false`` and decide
    attestation_enforce: bool = True
    #: re-measure this often; a change since the start denies and terminates runs (0 = off)
    attestation_interval_ms: int = 5000
    #: trust boundaries (``[[boundaries]]``), validated (see interlock.runtime.boundary)
    boundaries: tuple[Boundary, ...] = ()
    #: containment of ``interlock exec`` (``[exec]``, see interlock.containment)
    exec: ExecSettings = field(default_factory=ExecSettings)
    #: ``[witness]``: witness URLs and their cosignature keys (same order), and how many must
    #: cosign a tree head before it is confirmed (interlock.witness.confirm_head)
    witness_urls: tuple[str, ...] = ()
    witness_keys: tuple[str, ...] = ()
    witness_quorum: int = 0
    witness_timeout_ms: int = 2000

    @classmethod
    def from_toml(cls, text: str, *, source: str = CONFIG_NAME) -> Config:
        """Parse and validate ``interlock.toml``.

        Raises:
            ConfigError: on a syntax error, an unknown key or a value out of range.
        """
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        known = {
            "log": {"origin", "durability", "store", "lease_ms"},
            "gate": {
                "deadline_ms",
                "ledger_timeout_ms",
                "max_lineage_depth",
                "ledger_check_interval_ms",
            },
            "policy": {"trusted_keys"},
            "approvals": {"keys"},
            "break_glass": {"keys"},
            "attestation": {"trusted", "enforce", "interval_ms"},
            "exec": {
                "containment",
                "cgroup_root",
                "writable",
                "run_as",
                "pids_max",
                "memory_max",
                "cpu_max",
            },
            "witness": {"urls", "keys", "quorum", "timeout_ms"},
        }
        for section, body in doc.items():
            if section == "boundaries" and isinstance(body, list):
                continue
            if section not in known or not isinstance(body, dict):
                raise ConfigError(f"{source}: unknown section [{section}]")
            extra = set(body) - known[section]
            if extra:
                raise ConfigError(f"{source}: unknown key(s) in [{section}]: {sorted(extra)}")
        log: dict[str, Any] = doc.get("log", {})
        gate: dict[str, Any] = doc.get("gate", {})
        pol: dict[str, Any] = doc.get("policy", {})
        origin = log.get("origin")
        if not isinstance(origin, str) or not _ORIGIN_RE.match(origin):
            raise ConfigError(
                f"{source}: [log] origin must be a log name like interlock.local/prod"
                " (letters, digits and . _ - / : only)"
            )
        durability = log.get("durability", "full")
        if durability not in ("full", "process"):
            raise ConfigError(f"{source}: [log] durability must be 'full' or 'process'")
        store = log.get("store")
        if store is not None and not home_sections.is_store_url(store):
            raise ConfigError(
                f"{source}: [log] store must be a postgresql:// URL of a shared log (leave it"
                " out for the home's own SQLite ledger)"
            )
        lease_ms = log.get("lease_ms", 2000)
        if (
            not isinstance(lease_ms, int)
            or isinstance(lease_ms, bool)
            or not 100 <= lease_ms <= 600_000
        ):
            raise ConfigError(f"{source}: [log] lease_ms must be an integer in 100..600000")

        def _int(name: str, default: int, lo: int, hi: int) -> int:
            v = gate.get(name, default)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"{source}: [gate] {name} must be an integer in {lo}..{hi}")
            return v

        tk = pol.get("trusted_keys", [])
        if not isinstance(tk, list) or not all(isinstance(k, str) for k in tk):
            raise ConfigError(f"{source}: [policy] trusted_keys must be a list of hex keys")
        for k in tk:
            try:
                keys.public_from_raw(bytes.fromhex(k))
            except (ValueError, KeyFileError) as exc:
                raise ConfigError(
                    f"{source}: [policy] trusted key {k!r} is not hex Ed25519"
                ) from exc
        ak = home_sections.key_list(doc, "approvals", source)
        bk = home_sections.key_list(doc, "break_glass", source)
        att: dict[str, Any] = doc.get("attestation", {})
        trusted = att.get("trusted", [])
        if not isinstance(trusted, list) or not all(
            isinstance(d, str) and _HEX64_RE.match(d) for d in trusted
        ):
            raise ConfigError(
                f"{source}: [attestation] trusted must be a list of platform digests (64 hex"
                " characters, from `interlock attest show`)"
            )
        enforce = att.get("enforce", True)
        if not isinstance(enforce, bool):
            raise ConfigError(f"{source}: [attestation] enforce must be true or false")
        interval = att.get("interval_ms", 5000)
        if (
            not isinstance(interval, int)
            or isinstance(interval, bool)
            or not 0 <= interval <= 3_600_000
        ):
            raise ConfigError(
                f"{source}: [attestation] interval_ms must be an integer in 0..3600000"
            )
        boundaries = parse_boundaries(doc.get("boundaries", []), source=source)
        exec_settings = home_sections.exec_settings(doc.get("exec", {}), source)
        w_urls, w_keys, w_quorum, w_timeout = home_sections.witness_settings(
            doc.get("witness", {}), source
        )
        return cls(
            origin=origin,
            durability=durability,
            store=store,
            lease_ms=lease_ms,
            deadline_ms=_int("deadline_ms", 50, 1, 60_000),
            ledger_timeout_ms=_int("ledger_timeout_ms", 2000, 1, 600_000),
            max_lineage_depth=_int("max_lineage_depth", 16, 1, 1024),
            ledger_check_interval_ms=_int("ledger_check_interval_ms", 5000, 0, 3_600_000),
            trusted_policy_keys=tuple(tk),
            approver_keys=ak,
            break_glass_keys=bk,
            trusted_platforms=tuple(trusted),
            attestation_enforce=enforce,
            attestation_interval_ms=interval,
            boundaries=boundaries,
            exec=exec_settings,
            witness_urls=w_urls,
            witness_keys=w_keys,
            witness_quorum=w_quorum,
            witness_timeout_ms=w_timeout,
        )

    def to_toml(self) -> str:
        keys_list = ", ".join(f'"{k}"' for k in self.trusted_policy_keys)
        approver_list = ", ".join(f'"{k}"' for k in self.approver_keys)
        bg_list = ", ".join(f'"{k}"' for k in self.break_glass_keys)
        trusted_list = ", ".join(f'"{d}"' for d in self.trusted_platforms)
        return (
            "# Interlock governance home configuration.\n"
            "[log]\n"
            f'origin = "{self.origin}"\n'
            "# full: fsync before every allow (group commit). process: survives a process crash,\n"
            "# not power loss.\n"
            f'durability = "{self.durability}"\n'
            + (
                "# the shared PostgreSQL log this node appends to (PostgreSQL commits are always\n"
                "# durable, whatever durability says)\n"
                f"store = {json.dumps(self.store)}\n"
                "# a node that has not confirmed the log's head for this long denies everything\n"
                "# (POLICY_STALE): a revocation reaches every node within it\n"
                f"lease_ms = {self.lease_ms}\n"
                if self.store
                else ""
            )
            + "\n[gate]\n"
            "# intake-to-decision budget; past it the answer is DEADLINE_EXCEEDED\n"
            f"deadline_ms = {self.deadline_ms}\n"
            "# how long an allow may wait for its durable ledger commit (LEDGER_UNAVAILABLE)\n"
            f"ledger_timeout_ms = {self.ledger_timeout_ms}\n"
            f"max_lineage_depth = {self.max_lineage_depth}\n"
            "# a running gate re-checks its ledger this often and stops allowing on corruption\n"
            "# (LEDGER_CORRUPT); 0 turns the background check off\n"
            f"ledger_check_interval_ms = {self.ledger_check_interval_ms}\n\n"
            "[policy]\n"
            "# hex Ed25519 public keys whose signature on a policy bundle is trusted\n"
            f"trusted_keys = [{keys_list}]\n\n"
            "[approvals]\n"
            "# hex Ed25519 public keys whose approvals (interlock approve) are trusted; a permit\n"
            '# policy annotated @obligation("approval") denies APPROVAL_REQUIRED without one\n'
            f"keys = [{approver_list}]\n\n"
            "[break_glass]\n"
            "# hex Ed25519 public keys whose break-glass overrides (interlock break-glass) are\n"
            "# trusted: they override policy denials, never integrity failures\n"
            f"keys = [{bg_list}]\n\n"
            "[attestation]\n"
            "# deny everything (ENVIRONMENT_UNTRUSTED) unless the measured platform is trusted\n"
            f"enforce = {'true' if self.attestation_enforce else 'false'}\n"
            "# re-measure this often; a change since the start denies and terminates runs\n"
            f"interval_ms = {self.attestation_interval_ms}\n"
            "# platform digests this node may run as (`interlock attest trust` adds this one)\n"
            f"trusted = [{trusted_list}]\n\n"
            "[exec]\n"
            "# containment of `interlock exec`: full (a cgroup v2 per execution, and the home out\n"
            "# of the command's reach by Landlock or run_as), or the weaker\n"
            "# unsafe-no-key-isolation (cgroup only) and unsafe-process-group (neither)\n"
            f'containment = "{self.exec.mode}"\n'
            + (f'run_as = "{self.exec.run_as}"\n' if self.exec.run_as else "")
            + (f'cgroup_root = "{self.exec.cgroup_root}"\n' if self.exec.cgroup_root else "")
            + "# directories the command may write besides its working directory and /tmp\n"
            + "writable = ["
            + ", ".join(f'"{p}"' for p in self.exec.writable)
            + "]\n"
            + "".join(
                f"{name} = {value!r}\n".replace("'", '"')
                for name, value in (
                    ("pids_max", self.exec.limits.pids_max),
                    ("memory_max", self.exec.limits.memory_max),
                    ("cpu_max", self.exec.limits.cpu_max),
                )
                if value is not None
            )
            + (
                "\n[witness]\n"
                "# a tree head is confirmed only when this many of these witnesses cosign it\n"
                f"quorum = {self.witness_quorum}\n"
                f"urls = [{', '.join(json.dumps(u) for u in self.witness_urls)}]\n"
                "# their cosignature keys (interlock witness init prints one), in the same order\n"
                f"keys = [{', '.join(json.dumps(k) for k in self.witness_keys)}]\n"
                f"timeout_ms = {self.witness_timeout_ms}\n"
                if self.witness_urls
                else ""
            )
        )


def default_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``$INTERLOCK_HOME``, else ``./.interlock``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("INTERLOCK_HOME")
    return Path(env) if env else Path(".interlock")


@dataclass(frozen=True, slots=True)
class Home:
    """An initialised home directory."""

    path: Path
    config: Config

    @classmethod
    def load(cls, path: Path) -> Home:
        """Open an existing home, after checking that the governed agent cannot have planted,
        redirected or edited its files (:mod:`interlock.trust.files`): the home, ``keys/`` and
        ``policy/`` folders, ``interlock.toml``, the ledger files and the checkpoint anchor.

        Raises:
            UntrustedHomeFile: (ENVIRONMENT_UNTRUSTED) a folder or file of the home is a link,
                a FIFO or other special file, owned by another user, writable by group or others
                (the ledger: accessible by them), too large, or the configuration is not UTF-8.
            ConfigError: if the home or its configuration is missing or invalid.
        """
        cfg = path / CONFIG_NAME
        try:
            check_home_dir(path)
            text = read_private_text(cfg, home=path, max_bytes=MAX_CONFIG_BYTES)
        except FileNotFoundError as exc:
            raise HomeMissing(
                f"no Interlock home at {path} (missing {CONFIG_NAME}); run: interlock init"
                f" --home {path}"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read {cfg}: {exc.strerror}") from exc
        home = cls(path=path, config=Config.from_toml(text, source=str(cfg)))
        home.check_ledger_files()
        return home

    def check_ledger_files(self) -> None:
        """Check, without reading them, the files the gate reads or SQLite opens that are
        present: ``ledger.db`` (and ``-wal``, ``-shm``: they hold arguments and bearer tokens, so
        owner-only) and the checkpoint anchor. Missing ones pass: a new home has no anchor.

        Raises:
            UntrustedHomeFile: (ENVIRONMENT_UNTRUSTED) a present file fails a check.
            OSError: a present file could not be opened.
        """
        for name in _LEDGER_FILES:
            with contextlib.suppress(FileNotFoundError):
                check_private_file(self.path / name, home=self.path, secret=True)
        with contextlib.suppress(FileNotFoundError):
            check_private_file(self.anchor_path, home=self.path, max_bytes=MAX_ANCHOR_BYTES)

    def read_anchor(self) -> str | None:
        """The checkpoint anchor note kept outside the ledger, or None when there is none yet
        (a legitimate state: the gate writes it on close).

        Raises:
            UntrustedHomeFile: (ENVIRONMENT_UNTRUSTED) the anchor is a link, a FIFO or other
                special file, owned by another user, writable by group or others, larger than
                ``MAX_ANCHOR_BYTES`` or not UTF-8; or a folder on the way fails its check.
            OSError: the anchor exists but could not be read.
        """
        try:
            return read_private_text(self.anchor_path, home=self.path, max_bytes=MAX_ANCHOR_BYTES)
        except FileNotFoundError:
            return None

    def key_path(self, name: str) -> Path:
        return self.path / "keys" / f"{name}.key"

    def private_key(self, name: str) -> Ed25519PrivateKey:
        """The private key ``keys/<name>.key``, read through the home's checks.

        Raises:
            KeyFileError: the key is missing, not an Ed25519 PEM key, or (``UntrustedKeyFile``,
                ENVIRONMENT_UNTRUSTED) cannot be trusted: see :func:`keys.load_private_key`.
        """
        return keys.load_private_key(self.key_path(name), home=self.path)

    def trusted_policy_keys(self) -> list[Ed25519PublicKey]:
        return [keys.public_from_raw(bytes.fromhex(k)) for k in self.config.trusted_policy_keys]

    @property
    def policy_dir(self) -> Path:
        return self.path / "policy"

    @property
    def ledger_path(self) -> Path:
        """The home's own SQLite ledger file (unused when ``[log] store`` is set)."""
        return self.path / LEDGER_NAME

    @property
    def ledger_location(self) -> str | Path:
        """Where this home's log is: the ``[log] store`` URL, else the SQLite file."""
        return self.config.store or self.ledger_path

    @property
    def anchor_path(self) -> Path:
        """The newest checkpoint this home has seen, kept outside the ledger."""
        return self.path / ANCHOR_NAME


def create_home(
    path: Path, *, origin: str | None = None, durability: str = "full", store: str | None = None
) -> Home:
    """Create a new home's files: four keys, ``interlock.toml``, the default signed policy
    bundle and an empty ledger file (none with ``store``: the log is in PostgreSQL).
    :func:`interlock.bootstrap.init_home` then writes the ledger's first records; use that.

    Raises:
        HomeExists: if ``path`` already holds a home (nothing is overwritten).
        ConfigError: if the directory cannot be created.
    """
    if any((path / name).exists() for name in (CONFIG_NAME, "keys", "policy", "ledger.db")):
        raise HomeExists(
            f"{path} is already an Interlock home (or holds one's files); refusing to overwrite"
            " its keys. Choose another --home or remove it deliberately."
        )
    if origin is not None and not _ORIGIN_RE.match(origin):
        raise ConfigError(
            f"--origin {origin!r} is not a log name like interlock.local/prod"
            " (letters, digits and . _ - / : only)"
        )
    install_id = secrets.token_hex(6)
    if store is not None and not home_sections.is_store_url(store):
        raise ConfigError("--store must be a postgresql:// URL")
    config = Config(
        origin=origin or f"interlock.local/{install_id}",
        durability=durability,
        store=store,
        trusted_policy_keys=(),
    )
    # everything that can be refused is refused before the first key exists
    Config.from_toml(config.to_toml())
    try:
        path.mkdir(parents=True, exist_ok=True)
        # the ledger's payload table holds arguments and bearer tokens: owner-only home
        path.chmod(0o700)
        (path / "keys").mkdir(mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create home {path}: {exc.strerror}") from exc
    created = {name: keys.create_key(path / "keys" / f"{name}.key") for name in KEY_NAMES}
    policy_pub = keys.public_raw(created["policy"]).hex()
    config = Config(
        origin=config.origin,
        durability=durability,
        store=store,
        trusted_policy_keys=(policy_pub,),
    )
    # 0600 whatever the umask: Home.load refuses a configuration others could write
    fd = os.open(path / CONFIG_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(config.to_toml())
    from interlock.trust.attestation import trust_current

    trust_current(path / CONFIG_NAME)  # the platform that initialised the home is trusted
    config = Config.from_toml(
        read_private_text(path / CONFIG_NAME, home=path, max_bytes=MAX_CONFIG_BYTES)
    )
    # the ledger holds arguments and bearer tokens: owner-only from its first byte (SQLite
    # gives its -wal and -shm files the database file's mode)
    if store is None:
        os.close(os.open(path / "ledger.db", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    from interlock.policy.bundle import sign_bundle

    shutil.copytree(
        DEFAULT_POLICY_DIR, path / "policy", ignore=shutil.ignore_patterns("__pycache__")
    )
    _drop_group_other_write(path / "policy")
    sign_bundle(path / "policy", created["policy"], version=1)
    return Home(path=path, config=config)


def join_home(path: Path, fleet: Home) -> Home:
    """Create a home at ``path`` for another node of ``fleet``'s shared log: every node that
    appends to one log holds the same keys (the log key signs its checkpoints, the node key its
    governance records, the root key its trust settings and tokens, the policy key its bundles)
    and the same configuration, so ``fleet``'s four keys, its ``interlock.toml`` (verbatim: the
    same measured platform) and its signed policy bundle are copied. The log already has its
    first records: nothing is appended.

    Raises:
        ConfigError: ``fleet`` has no ``[log] store`` (a SQLite log is one node's).
        HomeExists: ``path`` already holds a home.
        KeyFileError: a key of ``fleet`` is missing or unsafe.
    """
    if fleet.config.store is None:
        raise ConfigError(
            f"--join {fleet.path}: that home's log is its own SQLite file; only a home whose"
            " [log] store is a shared PostgreSQL log can be joined"
        )
    if any((path / name).exists() for name in (CONFIG_NAME, "keys", "policy", "ledger.db")):
        raise HomeExists(f"{path} is already an Interlock home (or holds one's files)")
    text = read_private_text(fleet.path / CONFIG_NAME, home=fleet.path, max_bytes=MAX_CONFIG_BYTES)
    found = {name: fleet.private_key(name) for name in KEY_NAMES}  # checked before any write
    try:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
        (path / "keys").mkdir(mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create home {path}: {exc.strerror}") from exc
    for name, key in found.items():
        keys.write_key(path / "keys" / f"{name}.key", key)
    fd = os.open(path / CONFIG_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    shutil.copytree(fleet.policy_dir, path / "policy", ignore=shutil.ignore_patterns("__pycache__"))
    _drop_group_other_write(path / "policy")
    return Home.load(path)


def _drop_group_other_write(root: Path) -> None:
    """``chmod -R go-w``: copytree keeps the installed files' modes, which a umask of 002 at
    install time leaves group-writable, and the bundle loader refuses those."""
    for dirpath, _dirs, names in os.walk(root):
        for p in (Path(dirpath), *(Path(dirpath) / n for n in names)):
            mode = stat.S_IMODE(p.lstat().st_mode)
            if mode & (stat.S_IWGRP | stat.S_IWOTH):
                p.chmod(mode & ~(stat.S_IWGRP | stat.S_IWOTH))
