"""API keys: minting, hashing, the catalog's `api_keys` table, and the keys file other processes read.

A key is `rsk_<id>_<secret>`. The id is public (it names the key in `ragsvc keys list` and in logs); the secret
is 256 random bits shown once at creation and stored only as its SHA-256. A fast hash is enough here: the
secret is random and long, so there is nothing to brute-force that a slow password hash would protect.

Scopes nest: `admin` grants `write`, which grants `read`. A key may be limited to named collections; an empty
list means every collection.

The catalog is the source of truth, but duckdb lets one process at a time open it, and the model server may
run as a separate process (or from another data folder). So every change to the table also rewrites
`<data dir>/api-keys.json` (hashes only, written to a temporary name, fsynced and renamed): the model server
reads that file and rereads it when its modification time changes. Only SQL and that file's I/O live here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import duckdb

from ragsvc.errors import InvalidInput, NotFound
from ragsvc.types import is_collection_name

KeyScope = Literal["read", "write", "admin"]
SCOPES: tuple[str, ...] = get_args(KeyScope)
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}
KEYS_FILE = "api-keys.json"
TOKEN_PREFIX = "rsk_"
_FILE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored key: everything but the secret itself."""

    id: str
    name: str
    secret_sha256: str
    scopes: tuple[str, ...]
    collections: tuple[str, ...]
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def grants(self, scope: str) -> bool:
        """True when one of the key's scopes is `scope` or a wider one (admin > write > read)."""
        return any(_RANK[s] >= _RANK[scope] for s in self.scopes)

    def allows_collection(self, collection: str) -> bool:
        return not self.collections or collection in self.collections

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_sha256, _sha256(secret))


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just minted: `token` is what the client sends; it is not stored and cannot be shown again."""

    record: ApiKeyRecord
    token: str


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, secret = token[len(TOKEN_PREFIX):].partition("_")
    return (key_id, secret) if sep and key_id and secret else None


def mint_key(name: str, scopes: Sequence[str], collections: Sequence[str] = ()) -> NewKey:
    """A fresh key (not yet stored). InvalidInput for an unknown scope, an empty scope list or a bad name."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(f"scopes must be one or more of {', '.join(SCOPES)}; got {list(scopes)}")
    if not name or len(name) > 128 or not name.isprintable():
        raise InvalidInput("a key's name is 1-128 printable characters, e.g. 'ci-reader'")
    bad = [c for c in collections if not is_collection_name(c)]
    if bad:
        raise InvalidInput(f"{bad[0]!r} cannot be a collection's name (1-64 letters, digits, _ . - starting with a "
                           "letter or digit), so a key limited to it could never be used")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    record = ApiKeyRecord(id=key_id, name=name, secret_sha256=_sha256(secret),
                          scopes=tuple(sorted(set(scopes), key=_RANK.__getitem__)),
                          collections=tuple(dict.fromkeys(collections)), created_at=time.time())
    return NewKey(record=record, token=f"{TOKEN_PREFIX}{key_id}_{secret}")


class ApiKeyTable:
    """The `api_keys` table (store/schema.py). Takes the catalog's connection and lock, like the vector cache;
    every change rewrites the keys file beside the catalog."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, lock: threading.RLock, *, keys_file: Path) -> None:
        self._conn = conn
        self._lock = lock
        self.keys_file = keys_file

    def add(self, record: ApiKeyRecord) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                [record.id, record.name, record.secret_sha256, list(record.scopes), list(record.collections),
                 record.created_at, record.revoked_at])
            self._export()

    def revoke(self, key_id: str) -> ApiKeyRecord:
        """Mark the key revoked (kept, so `keys list` still shows it). NotFound for an unknown id."""
        with self._lock:
            found = self._conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? RETURNING id",
                [time.time(), key_id]).fetchall()
            if not found:
                raise NotFound(f"no API key {key_id!r}; `ragsvc keys list` shows the ids")
            self._export()
            return next(k for k in self.list() if k.id == key_id)

    def list(self) -> list[ApiKeyRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, name, secret_sha256, scopes, collections, created_at, revoked_at FROM api_keys "
                "ORDER BY created_at, id").fetchall()
        return [ApiKeyRecord(id=r[0], name=r[1], secret_sha256=r[2], scopes=tuple(r[3]), collections=tuple(r[4]),
                             created_at=r[5], revoked_at=r[6]) for r in rows]

    def _export(self) -> None:
        write_keys_file(self.keys_file, self.list())


def write_keys_file(path: Path, keys: Sequence[ApiKeyRecord]) -> None:
    """Hashes, scopes and revocations as JSON, replaced atomically (temporary name, fsync, rename)."""
    payload = json.dumps({"version": _FILE_VERSION, "keys": [asdict(k) for k in keys]}, indent=1)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(payload)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def read_keys_file(path: Path) -> list[ApiKeyRecord]:
    """The keys in a file `write_keys_file` wrote; [] when there is none. InvalidInput when it is damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read the API keys file {path}: {exc}; `ragsvc keys create` or `revoke` on the "
                           "data folder that holds the catalog rewrites it") from exc
    try:
        return [ApiKeyRecord(id=k["id"], name=k["name"], secret_sha256=k["secret_sha256"],
                             scopes=tuple(k["scopes"]), collections=tuple(k["collections"]),
                             created_at=float(k["created_at"]), revoked_at=k.get("revoked_at"))
                for k in data["keys"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"the API keys file {path} is not in the expected format ({exc!r})") from exc
