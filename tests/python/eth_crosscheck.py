"""Independent cross-check of shardsign's Ethereum encodings with eth-account.

Reads one JSON request on stdin, writes one JSON reply on stdout. Numbers travel as decimal
strings, bytes as 0x-hex. Request keys (all optional):
  key        0x-hex private key used by the sign_* jobs
  sign_txs   transactions to sign with eth-account (our field names)
  sign_msgs  0x-hex messages to sign with EIP-191 personal_sign
  recover_msgs  [{"message": hex, "signature": hex}] to recover the signer of
  generate   {"count": N, "seed": S}: make N random transactions of each type, sign them (set-code
             ones carry authorizations made with Account.sign_authorization)
  recover_txs  0x-hex raw signed transactions to recover the sender and hash of
  typed_data {"per_template": N, "random": M, "seed": S}: EIP-712 documents with eth-account's
             hashes (see typed_data_docs.py)
  recover_typed  [{"document": JSON text, "signature": hex}]: the signer of each EIP-712 signature
  sign_authorizations  [{"chainId", "address", "nonce"}]: EIP-7702 authorizations signed with `key`
  recover_authorizations  [{"chainId", "address", "nonce", "yParity", "r", "s"}]: each authority,
             over eth-account's own authorization hash
"""

import json
import random
import sys

import typed_data_docs

from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_account.typed_transactions import TypedTransaction
from eth_account.typed_transactions.set_code_transaction import Authorization as SetCodeAuthorization
from eth_keys import keys
from eth_utils import keccak, to_canonical_address, to_checksum_address
from hexbytes import HexBytes


def to_eth_account(tx):
    """Our transaction dict (decimal strings, hex bytes) -> the dict eth-account signs."""
    out = {
        "chainId": int(tx["chain_id"]),
        "nonce": int(tx["nonce"]),
        "gas": int(tx["gas_limit"]),
        "value": int(tx["value"]),
        "data": tx["data"],
    }
    if tx.get("to"):
        out["to"] = to_checksum_address(tx["to"])
    else:
        out["to"] = b""
    kind = tx["type"]
    if kind in ("legacy", "eip2930"):
        out["gasPrice"] = int(tx["gas_price"])
    if kind in ("eip2930", "eip1559", "eip7702"):
        out["accessList"] = [
            {"address": to_checksum_address(item["address"]), "storageKeys": item["storage_keys"]}
            for item in tx["access_list"]
        ]
        out["type"] = {"eip2930": 1, "eip1559": 2, "eip7702": 4}[kind]
    if kind in ("eip1559", "eip7702"):
        out["maxFeePerGas"] = int(tx["max_fee_per_gas"])
        out["maxPriorityFeePerGas"] = int(tx["max_priority_fee_per_gas"])
    if kind == "eip7702":
        out["authorizationList"] = [
            {
                "chainId": int(item["chain_id"]),
                "address": to_checksum_address(item["address"]),
                "nonce": int(item["nonce"]),
                "yParity": item["y_parity"],
                "r": int(item["r"], 16),
                "s": int(item["s"], 16),
            }
            for item in tx["authorization_list"]
        ]
    return out


def hex0x(data):
    return "0x" + bytes(data).hex()


def sign_txs(key, txs):
    out = []
    for tx in txs:
        signed = Account.sign_transaction(to_eth_account(tx), key)
        out.append({"raw": hex0x(signed.raw_transaction), "hash": hex0x(signed.hash)})
    return out


def random_tx(rng, kind):
    def big(bits):
        return str(rng.getrandbits(rng.randint(1, bits)) if rng.random() < 0.9 else 0)

    tx = {
        "type": kind,
        "chain_id": str(rng.choice([1, 5, 10, 137, 8453, 11155111, rng.randint(1, 2**63)])),
        "nonce": str(rng.getrandbits(rng.randint(0, 64)) if rng.random() < 0.9 else 0),
        "gas_limit": str(rng.randint(21000, 30_000_000)),
        "value": big(256),
        "data": hex0x(rng.randbytes(rng.choice([0, 0, 4, 36, 68, rng.randint(0, 2000)]))),
        "to": None if rng.random() < 0.1 and kind != "eip7702" else hex0x(rng.randbytes(20)),
    }
    if kind in ("legacy", "eip2930"):
        tx["gas_price"] = big(200)
    if kind in ("eip2930", "eip1559", "eip7702"):
        tx["access_list"] = [
            {
                "address": hex0x(rng.randbytes(20)),
                "storage_keys": [hex0x(rng.randbytes(32)) for _ in range(rng.randint(0, 3))],
            }
            for _ in range(rng.randint(0, 3))
        ]
    if kind in ("eip1559", "eip7702"):
        max_fee = int(big(200))
        tx["max_fee_per_gas"] = str(max_fee)
        tx["max_priority_fee_per_gas"] = str(rng.randint(0, max_fee))
    if kind == "eip7702":
        tx["authorization_list"] = [random_authorization(rng, int(tx["chain_id"])) for _ in range(rng.randint(1, 4))]
    return tx


def random_authorization(rng, tx_chain_id):
    """A tuple signed by a fresh authority with eth-account's own sign_authorization."""
    authority = Account.from_key(rng.randbytes(32))
    signed = Account.sign_authorization(
        {
            "chainId": rng.choice([0, tx_chain_id, rng.getrandbits(rng.randint(1, 64))]),
            "address": to_checksum_address(rng.randbytes(20)),
            "nonce": rng.choice([0, 2**64 - 1, rng.getrandbits(rng.randint(1, 64))]),
        },
        authority.key,
    )
    return {
        "chain_id": str(signed.chain_id),
        "address": hex0x(signed.address),
        "nonce": str(signed.nonce),
        "y_parity": signed.y_parity,
        "r": hex0x(signed.r.to_bytes(32, "big")),
        "s": hex0x(signed.s.to_bytes(32, "big")),
        "authority": authority.address,
    }


def generate(request):
    rng = random.Random(request["seed"])
    out = []
    for kind in ("legacy", "eip2930", "eip1559", "eip7702"):
        for _ in range(request["count"]):
            account = Account.from_key(rng.randbytes(32))
            tx = random_tx(rng, kind)
            signed = Account.sign_transaction(to_eth_account(tx), account.key)
            if kind != "legacy":
                # Also decode with eth-account's own parser, so that what we compare against is
                # what eth-account reads back, not just what it was given.
                TypedTransaction.from_bytes(HexBytes(signed.raw_transaction))
            out.append(
                {
                    "tx": tx,
                    "raw": hex0x(signed.raw_transaction),
                    "hash": hex0x(signed.hash),
                    "sender": account.address,
                    "v": str(signed.v),
                }
            )
    return out


def main():
    request = json.load(sys.stdin)
    reply = {}
    key = request.get("key")
    if "sign_txs" in request:
        reply["signed"] = sign_txs(key, request["sign_txs"])
    if "sign_msgs" in request:
        reply["message_signatures"] = [
            hex0x(Account.sign_message(encode_defunct(hexstr=m), key).signature)
            for m in request["sign_msgs"]
        ]
    if "recover_msgs" in request:
        reply["recovered"] = [
            Account.recover_message(encode_defunct(hexstr=item["message"]), signature=item["signature"])
            for item in request["recover_msgs"]
        ]
    if "recover_txs" in request:
        reply["recovered_txs"] = [
            {"sender": Account.recover_transaction(raw), "hash": hex0x(keccak(hexstr=raw))}
            for raw in request["recover_txs"]
        ]
    if "generate" in request:
        reply["generated"] = generate(request["generate"])
    if "recover_typed" in request:
        reply["recovered_typed"] = [
            Account.recover_message(
                encode_typed_data(full_message=json.loads(item["document"])),
                signature=item["signature"],
            )
            for item in request["recover_typed"]
        ]
    if "sign_authorizations" in request:
        reply["signed_authorizations"] = []
        for item in request["sign_authorizations"]:
            signed = Account.sign_authorization(
                {"chainId": int(item["chainId"]), "address": item["address"], "nonce": int(item["nonce"])},
                key,
            )
            reply["signed_authorizations"].append(
                {
                    "hash": hex0x(signed.authorization_hash),
                    "yParity": signed.y_parity,
                    "r": hex0x(signed.r.to_bytes(32, "big")),
                    "s": hex0x(signed.s.to_bytes(32, "big")),
                }
            )
    if "recover_authorizations" in request:
        reply["authorities"] = []
        for item in request["recover_authorizations"]:
            unsigned = SetCodeAuthorization(
                int(item["chainId"]), to_canonical_address(item["address"]), int(item["nonce"])
            )
            signature = keys.Signature(
                vrs=(item["yParity"], int(item["r"], 16), int(item["s"], 16))
            )
            reply["authorities"].append(
                signature.recover_public_key_from_msg_hash(unsigned.hash()).to_checksum_address()
            )
    if "typed_data" in request:
        job = request["typed_data"]
        reply["typed_data"] = typed_data_docs.typed_data_hashes(
            random.Random(job["seed"]), job["per_template"], job["random"]
        )
    if key:
        reply["address"] = Account.from_key(key).address
    json.dump(reply, sys.stdout)


if __name__ == "__main__":
    main()
