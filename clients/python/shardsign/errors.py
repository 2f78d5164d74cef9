"""Exceptions carrying the server's message. None of them ever contains the API key."""

import grpc


class ShardsignError(Exception):
    """Base class: `code` is the gRPC status name, `message` the server's explanation."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.message = message
        self.code = code


class ConfigurationError(ShardsignError, ValueError):
    """The client was set up wrongly (malformed API key, unreadable CA, bad endpoint)."""


class InvalidRequest(ShardsignError, ValueError):
    """The transaction or message was refused as malformed; the message names the field."""


class PolicyRefused(ShardsignError):
    """A policy rule refused the request: the message names the rule and the values."""


class ApprovalRequired(ShardsignError):
    """The key's policy parked the request for human approval. Once approvers approve
    `approval_id` (`shardsign approvals approve`), call again with the same `request_id`; a
    rejection or an expiry is final (a plain ShardsignError with code FAILED_PRECONDITION)."""

    def __init__(self, message, code=None, approval_id=None):
        super().__init__(message, code=code)
        self.approval_id = approval_id


class RateLimited(PolicyRefused):
    """The key's requests_per_minute is used up; retry later."""


class PermissionDenied(ShardsignError):
    """The API key lacks the scope or the key binding for this call."""


class Unauthenticated(ShardsignError):
    """Missing, wrong, rotated-out or revoked API key."""


class KeyExpired(Unauthenticated):
    """The API key expired: ask an operator for a new one."""


class Unavailable(ShardsignError):
    """Fewer than two signer nodes reachable, or the service is down (already retried)."""


class NotFound(ShardsignError):
    """Unknown signing key."""


def _trailer(error, name):
    """A trailing metadata value of a failed call, if the error carries one."""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == name:
            return value
    return None


def from_rpc_error(error):
    """Maps a grpc.RpcError to the matching ShardsignError."""
    code = error.code() if hasattr(error, "code") else None
    message = error.details() if hasattr(error, "details") else str(error)
    message = message or "no details"
    name = code.name if code is not None else "UNKNOWN"
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        approval_id = _trailer(error, "x-shardsign-approval-id")
        if approval_id:
            return ApprovalRequired(message, code=name, approval_id=approval_id)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        cls = PolicyRefused if "policy " in message else PermissionDenied
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        cls = RateLimited
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        cls = KeyExpired if "expired" in message else Unauthenticated
    elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        cls = Unavailable
    elif code == grpc.StatusCode.INVALID_ARGUMENT:
        cls = InvalidRequest
    elif code == grpc.StatusCode.NOT_FOUND:
        cls = NotFound
    else:
        cls = ShardsignError
    return cls(message, code=name)
