"""EIP-712 documents for the cross-check: the EIP's Mail example, EIP-2612 Permit, Permit2
PermitSingle and PermitBatch, EIP-3009 TransferWithAuthorization and ReceiveWithAuthorization (the
x402 payment), each with random values, and randomly generated types (nested structs, fixed and
dynamic arrays, every atomic type). Each comes with eth-account's `encode_typed_data` hash.

Values use the spellings both sides accept: integers as JSON integers (within 64 bits) or as
decimal or 0x-hex strings; addresses checksummed or lower-case; bytesN exactly N bytes.
"""

import json

from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils import to_checksum_address

DOMAIN_FIELDS = [
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
]


def hex0x(data):
    return "0x" + bytes(data).hex()


def address(rng):
    raw = rng.randbytes(20)
    return to_checksum_address(raw) if rng.random() < 0.7 else hex0x(raw)


def uint_value(rng, bits):
    value = rng.getrandbits(rng.randint(1, bits)) if rng.random() < 0.9 else rng.choice([0, 2**bits - 1])
    return spell_int(rng, value)


def int_value(rng, bits):
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    value = rng.choice([low, high, 0, rng.randint(low, high), rng.randint(max(low, -1000), min(high, 1000))])
    return spell_int(rng, value)


def spell_int(rng, value):
    choice = rng.random()
    if -(2**63) <= value < 2**64 and choice < 0.4:
        return value
    if value >= 0 and choice < 0.7:
        return hex(value)
    return str(value)


def text(rng):
    alphabet = "abcXYZ 019_-é☃€\"\\/\n"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))


def atomic(rng):
    kind = rng.choice(["address", "bool", "string", "bytes", "bytesN", "uintN", "intN"])
    if kind == "bytesN":
        return "bytes%d" % rng.randint(1, 32)
    if kind == "uintN":
        return "uint%d" % (8 * rng.randint(1, 32))
    if kind == "intN":
        return "int%d" % (8 * rng.randint(1, 32))
    return kind


def value_of(rng, type_, types, depth=0):
    if type_.endswith("]"):
        open_ = type_.rindex("[")
        inner, dimension = type_[:open_], type_[open_ + 1 : -1]
        length = int(dimension) if dimension else rng.randint(0, 3)
        return [value_of(rng, inner, types, depth + 1) for _ in range(length)]
    if type_ in types:
        return {f["name"]: value_of(rng, f["type"], types, depth + 1) for f in types[type_]}
    if type_ == "address":
        return address(rng)
    if type_ == "bool":
        return rng.random() < 0.5
    if type_ == "string":
        return text(rng)
    if type_ == "bytes":
        return hex0x(rng.randbytes(rng.randint(0, 80)))
    if type_.startswith("bytes"):
        return hex0x(rng.randbytes(int(type_[5:])))
    if type_.startswith("uint"):
        return uint_value(rng, int(type_[4:]))
    if type_.startswith("int"):
        return int_value(rng, int(type_[3:]))
    raise ValueError(type_)


def domain(rng, fields=None):
    if fields is None:
        fields = [f for f in DOMAIN_FIELDS if rng.random() < 0.6] or [DOMAIN_FIELDS[2]]
    types = [{"name": name, "type": type_} for name, type_ in fields]
    values = {}
    for name, type_ in fields:
        if name == "name":
            values[name] = rng.choice(["USD Coin", "Permit2", "Ether Mail", text(rng)])
        elif name == "version":
            values[name] = rng.choice(["1", "2", text(rng)])
        elif name == "chainId":
            values[name] = rng.choice([1, 8453, 84532, 11155111, str(rng.getrandbits(64))])
        elif name == "verifyingContract":
            values[name] = address(rng)
        else:
            values[name] = hex0x(rng.randbytes(32))
    return types, values


def random_document(rng):
    count = rng.randint(1, 4)
    names = ["S%d_%d" % (i, rng.randint(0, 99)) for i in range(count)]
    types = {}
    for index, name in enumerate(names):
        fields = []
        for f in range(rng.randint(1, 6)):
            later = names[index + 1 :]
            base = rng.choice(later) if later and rng.random() < 0.3 else atomic(rng)
            for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
                base += rng.choice(["[]", "[%d]" % rng.randint(1, 3)])
            fields.append({"name": "f%d_%s" % (f, rng.choice(["a", "to", "x$", "_v"])), "type": base})
        types[name] = fields
    # Every struct is reached from the primary one (eth-account derives the primary type as
    # the one struct nothing refers to; we refuse unused structs).
    for index in range(1, count):
        holder = names[rng.randint(0, index - 1)]
        types[holder].append({"name": "ref%d" % index, "type": names[index]})
    domain_types, domain_values = domain(rng)
    types["EIP712Domain"] = domain_types
    return {
        "types": types,
        "primaryType": names[0],
        "domain": domain_values,
        "message": value_of(rng, names[0], types),
    }


MAIL_TYPES = {
    "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
    "Mail": [
        {"name": "from", "type": "Person"},
        {"name": "to", "type": "Person"},
        {"name": "contents", "type": "string"},
    ],
}
PERMIT_TYPES = {
    "Permit": [
        {"name": "owner", "type": "address"},
        {"name": "spender", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
}
PERMIT_DETAILS = [
    {"name": "token", "type": "address"},
    {"name": "amount", "type": "uint160"},
    {"name": "expiration", "type": "uint48"},
    {"name": "nonce", "type": "uint48"},
]
PERMIT_SINGLE_TYPES = {
    "PermitDetails": PERMIT_DETAILS,
    "PermitSingle": [
        {"name": "details", "type": "PermitDetails"},
        {"name": "spender", "type": "address"},
        {"name": "sigDeadline", "type": "uint256"},
    ],
}
PERMIT_BATCH_TYPES = {
    "PermitDetails": PERMIT_DETAILS,
    "PermitBatch": [
        {"name": "details", "type": "PermitDetails[]"},
        {"name": "spender", "type": "address"},
        {"name": "sigDeadline", "type": "uint256"},
    ],
}
AUTHORIZATION = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]

TEMPLATES = [
    ("Mail", MAIL_TYPES, DOMAIN_FIELDS[:4]),
    ("Permit", PERMIT_TYPES, DOMAIN_FIELDS[:4]),
    ("PermitSingle", PERMIT_SINGLE_TYPES, [DOMAIN_FIELDS[0], DOMAIN_FIELDS[2], DOMAIN_FIELDS[3]]),
    ("PermitBatch", PERMIT_BATCH_TYPES, [DOMAIN_FIELDS[0], DOMAIN_FIELDS[2], DOMAIN_FIELDS[3]]),
    ("TransferWithAuthorization", {"TransferWithAuthorization": AUTHORIZATION}, DOMAIN_FIELDS[:4]),
    ("ReceiveWithAuthorization", {"ReceiveWithAuthorization": AUTHORIZATION}, DOMAIN_FIELDS[:4]),
]


def template_document(rng, primary, struct_types, domain_fields):
    types = dict(struct_types)
    domain_types, domain_values = domain(rng, domain_fields)
    types["EIP712Domain"] = domain_types
    return {
        "types": types,
        "primaryType": primary,
        "domain": domain_values,
        "message": value_of(rng, primary, types),
    }


def documents(rng, per_template, random_count):
    """[(kind, document)]: every template `per_template` times, then random ones."""
    out = []
    for primary, struct_types, domain_fields in TEMPLATES:
        for _ in range(per_template):
            out.append((primary, template_document(rng, primary, struct_types, domain_fields)))
    for _ in range(random_count):
        out.append(("random", random_document(rng)))
    return out


def typed_data_hashes(rng, per_template, random_count):
    """Each document as JSON text with eth-account's signing hash."""
    result = []
    for kind, document in documents(rng, per_template, random_count):
        signable = encode_typed_data(full_message=document)
        result.append(
            {
                "kind": kind,
                "document": json.dumps(document, ensure_ascii=rng.random() < 0.5),
                "hash": hex0x(_hash_eip191_message(signable)),
            }
        )
    return result
