"""Every error examday raises on purpose.

The gateway maps each one to an RFC 9457 problem document in one place
(`api.problems`); `status` is the HTTP status and `reason` the stable,
machine-readable code a client branches on.

    ExamdayError                      500 internal
    ├── ConfigError                   500 config_error       (start-up only)
    ├── BadRequest                    400 bad_request
    │   ├── MalformedInput            400 malformed_input
    │   └── InvalidInput              422 invalid_input
    ├── Unauthenticated               401 unauthenticated
    ├── Forbidden                     403 forbidden
    │   └── ResidencyViolation        403 residency_violation
    ├── NotFound                      404 not_found
    ├── Conflict                      409 conflict
    ├── PreconditionFailed            412 precondition_failed
    ├── PayloadTooLarge               413 payload_too_large
    ├── UnsupportedMediaType          415 unsupported_media_type
    ├── PreconditionRequired          428 precondition_required
    ├── RateLimited                   429 rate_limited           (Retry-After)
    └── Unavailable                   503 unavailable            (Retry-After)
        ├── DependencyDown            503 dependency_down
        └── ActorRestarting           503 (the caller's reason: room_unavailable, ...)

Raise the most specific class and pass a `reason` of your own when a client
needs to tell two failures of the same class apart (`wrong_credentials` vs
`consent_required`, both 401/403).
"""

from __future__ import annotations

from typing import Any, ClassVar


class ExamdayError(Exception):
    status: ClassVar[int] = 500
    default_reason: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        reason: str | None = None,
        retry_after: float | None = None,
        **extra: Any,
    ) -> None:
        self.detail = detail or self.title
        self.reason = reason or self.default_reason
        self.retry_after = retry_after
        self.extra = extra
        super().__init__(self.detail)

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross Ray process boundaries: keep keyword state when pickled.
        return (_rebuild, (type(self), self.detail, self.reason, self.retry_after, self.extra))


def _rebuild(
    cls: type[ExamdayError],
    detail: str,
    reason: str,
    retry_after: float | None,
    extra: dict[str, Any],
) -> ExamdayError:
    return cls(detail, reason=reason, retry_after=retry_after, **extra)


class ConfigError(ExamdayError):
    default_reason = "config_error"
    title = "Configuration error"


class BadRequest(ExamdayError):
    status = 400
    default_reason = "bad_request"
    title = "Bad request"


class MalformedInput(BadRequest):
    default_reason = "malformed_input"
    title = "Malformed input"


class InvalidInput(BadRequest):
    status = 422
    default_reason = "invalid_input"
    title = "Invalid input"


class Unauthenticated(ExamdayError):
    status = 401
    default_reason = "unauthenticated"
    title = "Authentication required"


class Forbidden(ExamdayError):
    status = 403
    default_reason = "forbidden"
    title = "Forbidden"


class ResidencyViolation(Forbidden):
    default_reason = "residency_violation"
    title = "Data must stay in its exam's region"


class NotFound(ExamdayError):
    status = 404
    default_reason = "not_found"
    title = "Not found"


class Conflict(ExamdayError):
    status = 409
    default_reason = "conflict"
    title = "Conflict"


class PreconditionFailed(ExamdayError):
    status = 412
    default_reason = "precondition_failed"
    title = "Precondition failed"


class PayloadTooLarge(ExamdayError):
    status = 413
    default_reason = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(ExamdayError):
    status = 415
    default_reason = "unsupported_media_type"
    title = "Unsupported media type"


class PreconditionRequired(ExamdayError):
    status = 428
    default_reason = "precondition_required"
    title = "Precondition required"


class RateLimited(ExamdayError):
    status = 429
    default_reason = "rate_limited"
    title = "Too many requests"


class Unavailable(ExamdayError):
    status = 503
    default_reason = "unavailable"
    title = "Service unavailable"


class DependencyDown(Unavailable):
    default_reason = "dependency_down"
    title = "A dependency is down"


class ActorRestarting(Unavailable):
    """An actor stayed restarting, moving or gone for all of a call's attempts
    (`infra.actor_calls`); the caller may drop what it knew about the actor's health."""

    default_reason = "actor_unavailable"
