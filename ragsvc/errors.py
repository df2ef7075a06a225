"""The one error tree of ragsvc. Every error carries the HTTP status the API answers with.

    RagsvcError (500)
    ├── InvalidInput (400)            the request or file is malformed; the message says what to fix
    │   └── DimensionMismatch (400)   a vector's width differs from the collection's
    ├── Unauthorized (401)            no API key, or one that is unknown or revoked
    ├── Forbidden (403)               the key lacks the route's scope or the collection
    ├── NotFound (404)
    │   ├── CollectionNotFound
    │   └── DocumentNotFound
    ├── Conflict (409)                the resource is taken: a catalog another process holds open
    │   └── CollectionExists
    ├── PayloadTooLarge (413)
    │   └── BatchTooLarge (413)       too large as a whole; the same documents fit in smaller batches
    ├── RateLimited (429)             the key's (or address's) token bucket is empty; retry after `retry_after_s`
    ├── NotReady (503)                indexes still loading, model still warming up
    ├── StorageFull (507)             the disk holding the data folder is full; the write did not happen
    ├── UpstreamError (502)           the model server failed or answered with something unusable
    │   ├── UpstreamRefused (502)     it refused our key or model name: the operator's settings, not the request
    │   └── UpstreamTimeout (504)     the model server did not answer in time
    └── IndexCorrupt (500)            a derived index failed to load (it is rebuilt from the store) or its
                                      library refused an add or search on it (rebuild it from the store)

Programming errors (a broken invariant, a caller that skipped a documented step) are RuntimeError or
ValueError, never a RagsvcError: they are bugs, not answers to give a user.

Library errors (duckdb, hnswlib, faiss) are wrapped at the boundary into one of these, with what the
user should do next.
"""

from __future__ import annotations

import errno


class RagsvcError(Exception):
    """Base of every error ragsvc raises on purpose."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, detail: object | None = None, cli_message: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.cli_message = cli_message
        """The message as a terminal should say it, where the fix is a command rather than an HTTP request
        (`ragsvc collections create NAME`, not POST /v1/collections); None: `message` fits both."""


class InvalidInput(RagsvcError):
    status_code = 400
    code = "invalid_input"


class DimensionMismatch(InvalidInput):
    code = "dimension_mismatch"


class Unauthorized(RagsvcError):
    status_code = 401
    code = "unauthorized"


class Forbidden(RagsvcError):
    status_code = 403
    code = "forbidden"


class NotFound(RagsvcError):
    status_code = 404
    code = "not_found"


class CollectionNotFound(NotFound):
    code = "collection_not_found"

    def __init__(self, message: str, *, collection: str | None = None, cli_message: str | None = None) -> None:
        super().__init__(message, cli_message=cli_message)
        self.collection = collection
        """The name asked for, when known: the CLI adds how to load the bundled sample when it is the sample."""


class DocumentNotFound(NotFound):
    code = "document_not_found"


class Conflict(RagsvcError):
    status_code = 409
    code = "conflict"


class CollectionExists(Conflict):
    code = "collection_exists"


class PayloadTooLarge(RagsvcError):
    status_code = 413
    code = "payload_too_large"


class BatchTooLarge(PayloadTooLarge):
    """A batch too large as a whole, not for any one document: the same documents fit in smaller batches."""

    code = "batch_too_large"


class RateLimited(RagsvcError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(RagsvcError):
    status_code = 503
    code = "not_ready"


class StorageFull(RagsvcError):
    status_code = 507
    code = "insufficient_storage"


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded")


def disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from or while handling, says the disk (or quota) is full:
    an OSError's errno, or the words duckdb copies from the OS into its own exceptions."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return True
        if any(words in str(current) for words in _DISK_FULL_WORDS):
            return True
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def storage_full(action: str) -> StorageFull:
    return StorageFull(f"{action} failed: the disk holding the data folder is full. Nothing of it was stored; "
                       "free some space and send it again")


class UpstreamError(RagsvcError):
    status_code = 502
    code = "upstream_error"


class UpstreamRefused(UpstreamError):
    """The model server refused ragsvc's own credentials or model name (its 401, 403 or 404). The user's request
    is fine, so it is no 4xx of theirs; the message names the setting the operator must fix."""

    code = "upstream_refused"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class IndexCorrupt(RagsvcError):
    code = "index_corrupt"
