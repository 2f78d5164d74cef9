"""shardsign: sign Ethereum transactions with a 2-of-3 threshold key held by shardsign nodes,
in place of a local private key. See README.md."""

from ._common import ApiKey, Budget, PolicyCheck, SignedMessage, SignedTransaction
from ._sync import ShardsignSigner
from .errors import (
    ApprovalRequired,
    ConfigurationError,
    InvalidRequest,
    KeyExpired,
    NotFound,
    PermissionDenied,
    PolicyRefused,
    RateLimited,
    ShardsignError,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "ApprovalRequired",
    "Budget",
    "PolicyCheck",
    "ApiKey",
    "ConfigurationError",
    "InvalidRequest",
    "KeyExpired",
    "NotFound",
    "PermissionDenied",
    "PolicyRefused",
    "RateLimited",
    "ShardsignError",
    "ShardsignSigner",
    "SignedMessage",
    "SignedTransaction",
    "Unauthenticated",
    "Unavailable",
]
