"""What the sync and async signers share: the API key (validated, hidden), the conversion of
eth-account transaction dicts to the API's messages, and the result types."""

import json
import os
import re
import secrets
from dataclasses import dataclass

from .errors import ConfigurationError, InvalidRequest
from .v1 import shardsign_pb2 as pb

API_KEY_ENV = "SHARDSIGN_API_KEY"
_API_KEY = re.compile(r"^ss_(live|test)_[0-9a-f]{16}_[0-9a-f]{64}$")
EXPIRES_IN_HEADER = "x-key-expires-in"

try:  # The type eth-account returns, when it is installed: agent code then sees no difference.
    from hexbytes import HexBytes as _Bytes
except ImportError:  # pragma: no cover - plain bytes otherwise
    _Bytes = bytes


class ApiKey:
    """An API key that never shows itself: not in repr, str, or exceptions."""

    __slots__ = ("_value", "public_id")

    def __init__(self, value):
        if value is None:
            value = os.environ.get(API_KEY_ENV)
        if not value:
            raise ConfigurationError(
                f"no API key: pass api_key= or set {API_KEY_ENV}"
            )
        value = value.strip()
        if not _API_KEY.match(value):
            raise ConfigurationError(
                "the API key is malformed: expected ss_live_<16 hex>_<64 hex> (or ss_test_)"
            )
        self._value = value
        self.public_id = value[:24]

    def header(self):
        return ("authorization", "Bearer " + self._value)

    def __repr__(self):
        return f"ApiKey({self.public_id}_***)"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("an API key cannot be pickled")


def read_ca(ca_cert):
    """PEM bytes from a path, bytes or str; None for the system roots."""
    if ca_cert is None:
        return None
    if isinstance(ca_cert, bytes):
        return ca_cert
    if isinstance(ca_cert, str) and ca_cert.lstrip().startswith("-----BEGIN"):
        return ca_cert.encode()
    try:
        with open(ca_cert, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ConfigurationError(f"cannot read the CA certificate {ca_cert}: {error.strerror}") from None


def target_of(endpoint):
    """`host:port` from `host:port` or `https://host:port`."""
    for prefix in ("https://", "grpcs://"):
        if endpoint.startswith(prefix):
            endpoint = endpoint[len(prefix):]
    if endpoint.startswith("http://"):
        raise ConfigurationError("shardsign is served over TLS: use https:// or host:port")
    return endpoint.rstrip("/")


MAX_ENDPOINTS = 16

#: Status codes after which a call is retried on the next endpoint (with several): a refused or
#: lost connection is UNAVAILABLE; a killed one can surface as UNKNOWN or CANCELLED (the
#: coordinator itself never answers with either). The request id stays the same.
TRANSPORT_FAILURES = ("UNAVAILABLE", "UNKNOWN", "CANCELLED")


def targets_of(endpoint):
    """The endpoints of `host:port` or several comma-separated (coordinators sharing one
    database), in order of preference."""
    targets = [target_of(part.strip()) for part in str(endpoint).split(",") if part.strip()]
    if not targets or len(targets) > MAX_ENDPOINTS:
        raise ConfigurationError(f"endpoint: expected 1 to {MAX_ENDPOINTS} addresses, comma-separated")
    return targets


def should_retry(error, several):
    """Whether a failed call may be retried (same request id): UNAVAILABLE always; a killed
    connection too when another endpoint can take it."""
    code = error.code() if hasattr(error, "code") else None
    name = code.name if code is not None else ""
    return name == "UNAVAILABLE" or (several and name in TRANSPORT_FAILURES)


def request_id():
    return "py-" + secrets.token_hex(16)


def _quantity(tx, field, required=True, default=None):
    if field not in tx:
        if required:
            raise InvalidRequest(f"{field}: missing")
        return default
    value = tx[field]
    if isinstance(value, bool):
        raise InvalidRequest(f"{field}: expected an int or a hex string")
    if isinstance(value, int):
        if value < 0:
            raise InvalidRequest(f"{field}: negative")
        return str(value)
    if isinstance(value, str):
        return value
    raise InvalidRequest(f"{field}: expected an int or a hex string")


def _u64(tx, field, required=True, default=0):
    value = _quantity(tx, field, required, None)
    if value is None:
        return default
    try:
        number = int(value, 16) if value.lower().startswith("0x") else int(value)
    except ValueError:
        raise InvalidRequest(f"{field}: not a number") from None
    if not 0 <= number < 2**64:
        raise InvalidRequest(f"{field}: does not fit in 64 bits")
    return number


def _data(tx):
    data = tx.get("data", tx.get("input", b""))
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):
        text = data[2:] if data.lower().startswith("0x") else data
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise InvalidRequest("data: not hex") from None
    raise InvalidRequest("data: expected bytes or a hex string")


def _to(tx):
    to = tx.get("to")
    if to in (None, b"", ""):
        return ""
    if isinstance(to, (bytes, bytearray)):
        return "0x" + bytes(to).hex()
    return str(to)


def _access_list(tx):
    items = []
    for item in tx.get("accessList", []) or []:
        keys = []
        for key in item.get("storageKeys", []):
            if isinstance(key, (bytes, bytearray)):
                keys.append(bytes(key))
            else:
                text = key[2:] if key.lower().startswith("0x") else key
                try:
                    keys.append(bytes.fromhex(text))
                except ValueError:
                    raise InvalidRequest("accessList: storage keys must be hex") from None
        items.append(pb.AccessListItem(address=str(item.get("address", "")), storage_keys=keys))
    return items


def _scalar(field, value):
    if isinstance(value, bool) or not isinstance(value, (int, str, bytes, bytearray)):
        raise InvalidRequest(f"{field}: expected an int, a hex string or 32 bytes")
    if isinstance(value, (bytes, bytearray)):
        number = int.from_bytes(value, "big")
    elif isinstance(value, str):
        try:
            number = int(value, 16) if value.lower().startswith("0x") else int(value)
        except ValueError:
            raise InvalidRequest(f"{field}: not a number") from None
    else:
        number = value
    if not 0 <= number < 2**256:
        raise InvalidRequest(f"{field}: does not fit in 256 bits")
    return number.to_bytes(32, "big")


def _authorization_field(item, camel, snake):
    if isinstance(item, dict):
        for name in (camel, snake):
            if name in item:
                return item[name]
    elif hasattr(item, snake):
        return getattr(item, snake)
    raise InvalidRequest(f"authorizationList: an entry has no {camel}")


def _authorization_list(tx):
    """Signed tuples: dicts (chainId, address, nonce, yParity, r, s), eth-account's
    SignedSetCodeAuthorization or this package's SignedAuthorization."""
    tuples = []
    for index, item in enumerate(tx.get("authorizationList", []) or []):
        field = lambda camel, snake: _authorization_field(item, camel, snake)  # noqa: E731
        address = field("address", "address")
        if isinstance(address, (bytes, bytearray)):
            address = "0x" + bytes(address).hex()
        numbers = {
            f"authorizationList[{index}].chainId": field("chainId", "chain_id"),
            f"authorizationList[{index}].nonce": field("nonce", "nonce"),
        }
        y_parity = field("yParity", "y_parity")
        y_parity = int(y_parity, 16) if isinstance(y_parity, str) else y_parity
        if y_parity not in (0, 1):
            raise InvalidRequest(f"authorizationList[{index}].yParity: must be 0 or 1")
        tuples.append(
            pb.SignedAuthorization(
                chain_id=_u64(numbers, f"authorizationList[{index}].chainId"),
                address=str(address),
                nonce=_u64(numbers, f"authorizationList[{index}].nonce"),
                y_parity=y_parity,
                r=_scalar(f"authorizationList[{index}].r", field("r", "r")),
                s=_scalar(f"authorizationList[{index}].s", field("s", "s")),
            )
        )
    return tuples


def _tx_type(tx):
    declared = tx.get("type")
    if declared is not None:
        number = int(declared, 16) if isinstance(declared, str) else int(declared)
        if number not in (0, 1, 2, 4):
            hint = " (blob transactions are refused)" if number == 3 else ""
            raise InvalidRequest(f"type: 0x{number:x} is not supported (0, 1, 2, 4){hint}")
        if number != 4 and tx.get("authorizationList"):
            # Never drop what the caller asked for: a delegation silently left out is a different
            # transaction from the one they meant.
            raise InvalidRequest(f"authorizationList: only type 4 (set-code) transactions carry one, not type {number}")
        return number
    if "authorizationList" in tx:
        return 4
    if "maxFeePerGas" in tx or "maxPriorityFeePerGas" in tx:
        return 2
    if "accessList" in tx:
        return 1
    return 0


def sign_request(key_id, tx, request_id_=None):
    """A SignTransactionRequest from an eth-account transaction dict (under `request_id_`, or a
    fresh request id)."""
    if not isinstance(tx, dict):
        raise InvalidRequest("the transaction must be a dict, as for eth_account.Account.sign_transaction")
    kind = _tx_type(tx)
    common = dict(
        chain_id=_u64(tx, "chainId"),
        nonce=_u64(tx, "nonce"),
        to=_to(tx),
        value=_quantity(tx, "value", required=False, default="0"),
        data=_data(tx),
    )
    request = pb.SignTransactionRequest(key_id=key_id, request_id=request_id_ or request_id())
    if kind == 4:
        request.eip7702.CopyFrom(
            pb.Eip7702Transaction(
                max_priority_fee_per_gas=_quantity(tx, "maxPriorityFeePerGas"),
                max_fee_per_gas=_quantity(tx, "maxFeePerGas"),
                gas_limit=_u64(tx, "gas"),
                access_list=_access_list(tx),
                authorization_list=_authorization_list(tx),
                **common,
            )
        )
    elif kind == 2:
        request.eip1559.CopyFrom(
            pb.Eip1559Transaction(
                max_priority_fee_per_gas=_quantity(tx, "maxPriorityFeePerGas"),
                max_fee_per_gas=_quantity(tx, "maxFeePerGas"),
                gas_limit=_u64(tx, "gas"),
                access_list=_access_list(tx),
                **common,
            )
        )
    elif kind == 1:
        request.eip2930.CopyFrom(
            pb.Eip2930Transaction(
                gas_price=_quantity(tx, "gasPrice"),
                gas_limit=_u64(tx, "gas"),
                access_list=_access_list(tx),
                **common,
            )
        )
    else:
        request.legacy.CopyFrom(
            pb.LegacyTransaction(gas_price=_quantity(tx, "gasPrice"), gas_limit=_u64(tx, "gas"), **common)
        )
    return request


def message_bytes(signable_message):
    """The bytes to sign from an eth-account SignableMessage (EIP-191 version E only), or bytes."""
    if isinstance(signable_message, (bytes, bytearray)):
        return bytes(signable_message)
    version = getattr(signable_message, "version", None)
    body = getattr(signable_message, "body", None)
    if version is None or body is None:
        raise InvalidRequest("expected an eth_account.messages.SignableMessage (encode_defunct) or bytes")
    if bytes(version) != b"E":
        raise InvalidRequest("only EIP-191 personal messages (encode_defunct) are supported")
    return bytes(body)


_DOMAIN_FIELDS = [
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
]


def _json_ready(value):
    """Values as the service reads them: integers beyond 64 bits as decimal strings (a JSON
    number that large is not exact), bytes as 0x-hex."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def _primary_type(types):
    referenced = set()
    for name, fields in types.items():
        for field in fields:
            base = field["type"].split("[", 1)[0]
            if base in types and base != name:
                referenced.add(base)
    roots = [name for name in types if name not in referenced and name != "EIP712Domain"]
    if len(roots) != 1:
        raise InvalidRequest("cannot tell the primary type: give full_message with primaryType")
    return roots[0]


def authorization_request(key_id, authorization_dict):
    """An eth-account style authorization dict (chainId, address, nonce) as the API's request."""
    try:
        chain_id = int(authorization_dict["chainId"])
        address = authorization_dict["address"]
        nonce = int(authorization_dict["nonce"])
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidRequest(f"an authorization needs chainId, address and nonce: {error}") from None
    if isinstance(address, (bytes, bytearray)):
        address = "0x" + bytes(address).hex()
    if not (0 <= chain_id < 2**64) or not (0 <= nonce < 2**64):
        raise InvalidRequest("chainId and nonce must be between 0 and 2^64-1")
    return pb.SignAuthorizationRequest(
        key_id=key_id, request_id=request_id(), chain_id=chain_id, address=address, nonce=nonce
    )


@dataclass(frozen=True)
class SignedAuthorization:
    """As eth-account's SignedSetCodeAuthorization: the tuple and y_parity, r, s; the
    authorization_hash the signature covers."""

    chain_id: int
    address: str
    nonce: int
    y_parity: int
    r: int
    s: int
    authorization_hash: bytes

    @classmethod
    def from_reply(cls, reply):
        return cls(
            chain_id=reply.chain_id,
            address=reply.address,
            nonce=reply.nonce,
            y_parity=reply.y_parity,
            r=int.from_bytes(reply.r, "big"),
            s=int.from_bytes(reply.s, "big"),
            authorization_hash=_Bytes(reply.hash),
        )


def typed_data_json(domain_data=None, message_types=None, message_data=None, full_message=None):
    """The EIP-712 document as JSON text, from eth-account's `sign_typed_data` arguments: the
    whole document (`full_message`, a dict or JSON text) or its three parts."""
    if full_message is not None:
        if any(part is not None for part in (domain_data, message_types, message_data)):
            raise InvalidRequest("give full_message or domain_data/message_types/message_data, not both")
        if isinstance(full_message, str):
            return full_message
        return json.dumps(_json_ready(full_message))
    if domain_data is None or message_types is None or message_data is None:
        raise InvalidRequest("give full_message, or all of domain_data, message_types and message_data")
    types = dict(message_types)
    types.setdefault(
        "EIP712Domain",
        [{"name": name, "type": type_} for name, type_ in _DOMAIN_FIELDS if name in domain_data],
    )
    document = {
        "types": types,
        "primaryType": _primary_type(message_types),
        "domain": domain_data,
        "message": message_data,
    }
    return json.dumps(_json_ready(document))


@dataclass(frozen=True)
class SignedTransaction:
    """As eth-account's: raw_transaction and hash are HexBytes (bytes without hexbytes), r, s, v
    ints."""

    raw_transaction: bytes
    hash: bytes
    r: int
    s: int
    v: int
    sender: str

    @classmethod
    def from_reply(cls, reply):
        return cls(
            raw_transaction=_Bytes(reply.raw_transaction),
            hash=_Bytes(reply.tx_hash),
            r=int.from_bytes(reply.r, "big"),
            s=int.from_bytes(reply.s, "big"),
            v=int(reply.v),
            sender=reply.sender,
        )


@dataclass(frozen=True)
class SignedMessage:
    """As eth-account's: message_hash and signature bytes, r, s, v ints."""

    message_hash: bytes
    r: int
    s: int
    v: int
    signature: bytes

    @classmethod
    def from_reply(cls, reply):
        return cls.from_parts(reply.signature, reply.message_hash)

    @classmethod
    def from_parts(cls, signature, message_hash):
        signature = _Bytes(signature)
        return cls(
            message_hash=_Bytes(message_hash),
            r=int.from_bytes(signature[:32], "big"),
            s=int.from_bytes(signature[32:64], "big"),
            v=signature[64],
            signature=signature,
        )


def expires_in(metadata):
    for key, value in metadata or ():
        if key == EXPIRES_IN_HEADER:
            try:
                return int(value)
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class Budget:
    """A rolling 24 h cap as the coordinator counts it: base units (wei, or the token's)."""

    policy: str
    chain_id: int
    asset: str
    token: str
    cap: int
    spent: int
    remaining: int
    decimals: int


@dataclass(frozen=True)
class PolicyCheck:
    """What a dry run says: `allowed`, or `needs_approval` (signing would park it for human
    approval), else refused; the deciding `rule`, the refusal's `detail` and
    whose `policy` ("api_key", "signing_key" or "key"); the 24 h `budgets` the request counts
    toward (the coordinator's view: every node keeps its own ledger too)."""

    allowed: bool
    needs_approval: bool
    rule: str
    detail: str
    policy: str
    budgets: tuple

    @classmethod
    def from_reply(cls, reply):
        return cls(
            allowed=reply.decision == pb.CheckPolicyResponse.ALLOW,
            needs_approval=reply.decision == pb.CheckPolicyResponse.NEEDS_APPROVAL,
            rule=reply.rule,
            detail=reply.detail,
            policy=reply.policy,
            budgets=tuple(
                Budget(b.policy, b.chain_id, b.asset, b.token, int(b.cap), int(b.spent), int(b.remaining), b.decimals)
                for b in reply.budgets
            ),
        )


def check_request(**request):
    """A CheckPolicyRequest around one signing request (its request id is not used)."""
    return pb.CheckPolicyRequest(**request)

