"""The Python client against a real cluster, checked with eth-account (a library nobody here
wrote): every transaction type decodes to the fields sent and recovers to the key's address."""

import asyncio

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak

import shardsign
from shardsign.aio import AsyncShardsignSigner

from conftest import DEMO_RECIPIENT

SEPOLIA = 11155111
GWEI = 10**9


def signer_for(cluster, api_key=None, **kwargs):
    return shardsign.ShardsignSigner(
        cluster.endpoint,
        api_key=api_key or cluster.agent_key,
        key_id="demo",
        ca_cert=cluster.ca,
        **kwargs,
    )


def transactions():
    base = {"chainId": SEPOLIA, "nonce": 7, "to": DEMO_RECIPIENT, "value": 10**16, "gas": 21000}
    legacy = dict(base, gasPrice=20 * GWEI)
    eip2930 = dict(
        base,
        gasPrice="0x4a817c800",
        gas=30000,
        accessList=[{"address": DEMO_RECIPIENT, "storageKeys": ["0x" + "00" * 31 + "01"]}],
        type=1,
    )
    eip1559 = dict(base, maxFeePerGas=30 * GWEI, maxPriorityFeePerGas="0x3b9aca00", value="0x2386f26fc10000", type="0x2")
    return {"legacy": legacy, "eip2930": eip2930, "eip1559": eip1559}


def decoded_fields(raw):
    """What eth-account reads back from the raw transaction."""
    if raw[0] in (1, 2):
        return TypedTransaction.from_bytes(raw).as_dict()
    from eth_account._utils.legacy_transactions import Transaction

    return Transaction.from_bytes(raw).as_dict()


@pytest.mark.parametrize("kind", ["legacy", "eip2930", "eip1559"])
def test_every_transaction_type_signs_and_eth_account_agrees(cluster, kind):
    tx = transactions()[kind]
    with signer_for(cluster) as signer:
        address = signer.address
        signed = signer.sign_transaction(tx)
    assert Account.recover_transaction(signed.raw_transaction) == address
    assert signed.hash == keccak(signed.raw_transaction)
    assert signed.sender == address
    fields = decoded_fields(signed.raw_transaction)
    assert fields["nonce"] == 7
    assert fields["value"] == 10**16
    assert fields["gas"] == tx["gas"]
    assert bytes(fields["to"]).hex() == DEMO_RECIPIENT[2:].lower()
    assert fields["r"] == signed.r and fields["s"] == signed.s and fields["v"] == signed.v
    if kind == "legacy":
        assert signed.v in (SEPOLIA * 2 + 35, SEPOLIA * 2 + 36)
        assert fields["gasPrice"] == 20 * GWEI
    else:
        assert fields["chainId"] == SEPOLIA
        assert signed.v in (0, 1)
    if kind == "eip2930":
        assert len(fields["accessList"]) == 1
    if kind == "eip1559":
        assert fields["maxFeePerGas"] == 30 * GWEI
        assert fields["maxPriorityFeePerGas"] == GWEI


def test_eip191_messages_recover_to_the_address(cluster):
    with signer_for(cluster) as signer:
        message = encode_defunct(text="I am an agent")
        signed = signer.sign_message(message)
        assert Account.recover_message(message, signature=signed.signature) == signer.address
        assert signed.v in (27, 28)


SEPOLIA_USDC = "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"
AUTHORIZATION_TYPES = {
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ]
}


def x402_payment(sender, name="USDC"):
    """An EIP-3009 authorization as an x402 "exact" payment on Sepolia USDC signs it (the demo
    policy allows that domain and primary type)."""
    domain = {"name": name, "version": "2", "chainId": SEPOLIA, "verifyingContract": SEPOLIA_USDC}
    message = {
        "from": sender,
        "to": DEMO_RECIPIENT,
        "value": 10_000,
        "validAfter": 0,
        "validBefore": 2**40,
        "nonce": bytes(range(32)),
    }
    return domain, message


def test_eip712_typed_data_recovers_to_the_address(cluster):
    with signer_for(cluster) as signer:
        domain, message = x402_payment(signer.address)
        signed = signer.sign_typed_data(domain, AUTHORIZATION_TYPES, message)
        signable = encode_typed_data(domain, AUTHORIZATION_TYPES, message)
        assert Account.recover_message(signable, signature=signed.signature) == signer.address
        assert signed.v in (27, 28)
        full = {
            "types": dict(AUTHORIZATION_TYPES, EIP712Domain=[
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ]),
            "primaryType": "TransferWithAuthorization",
            "domain": domain,
            "message": dict(message, value=2**200),
        }
        again = signer.sign_typed_data(full_message=full)
        assert Account.recover_message(encode_typed_data(full_message=full), signature=again.signature) == signer.address
        other_domain, _ = x402_payment(signer.address, name="USD Coin")
        with pytest.raises(shardsign.PolicyRefused) as refused:
            signer.sign_typed_data(other_domain, AUTHORIZATION_TYPES, message)
        assert "allowed_typed_data" in str(refused.value)
        with pytest.raises(shardsign.InvalidRequest) as invalid:
            signer.sign_typed_data(domain, AUTHORIZATION_TYPES, dict(message, nonce=b"short"))
        assert "message.nonce: 5 bytes is not bytes32" in str(invalid.value)


def test_an_authorization_for_an_unlisted_delegate_is_refused(cluster):
    # The demo policy lists no EIP-7702 delegate: an authorization hands the whole account to code.
    with signer_for(cluster) as signer:
        with pytest.raises(shardsign.PolicyRefused) as refused:
            signer.sign_authorization({"chainId": SEPOLIA, "address": SEPOLIA_USDC, "nonce": 0})
        assert "allowed_delegates" in str(refused.value)
        with pytest.raises(shardsign.InvalidRequest):
            signer.sign_authorization({"chainId": SEPOLIA, "address": "0x1234", "nonce": 0})
        with pytest.raises(shardsign.InvalidRequest):
            signer.sign_authorization({"chainId": -1, "address": SEPOLIA_USDC, "nonce": 0})


def test_a_dry_run_answers_like_signing_and_counts_nothing(cluster):
    tx = transactions()["eip1559"]
    with signer_for(cluster) as signer:
        before = signer.check_transaction(tx)
        assert before.allowed and before.rule == ""
        budget = next(b for b in before.budgets if b.policy == "api_key" and b.asset == "ETH")
        assert (budget.chain_id, budget.cap, budget.decimals) == (SEPOLIA, 10**18, 18)
        assert budget.remaining == budget.cap - budget.spent
        again = signer.check_transaction(tx)
        assert again.budgets == before.budgets, "a dry run counts nothing"
        refused = signer.check_transaction(dict(tx, value=5 * 10**17))
        assert not refused.allowed
        assert (refused.rule, refused.policy) == ("max_value_per_tx", "api_key")
        assert "0.5 ETH > 0.1 ETH" in refused.detail
        signer.sign_transaction(tx)
        after = signer.check_transaction(tx)
        spent_after = next(b for b in after.budgets if b.policy == "api_key" and b.asset == "ETH").spent
        assert spent_after == budget.spent + 10**16
        typed = signer.check_typed_data(full_message={
            "types": {"EIP712Domain": [{"name": "chainId", "type": "uint256"}], "T": [{"name": "v", "type": "uint256"}]},
            "primaryType": "T", "domain": {"chainId": SEPOLIA}, "message": {"v": 1},
        })
        assert not typed.allowed and typed.rule == "allowed_typed_data"
        assert signer.check_message(encode_defunct(text="hello")).allowed
        hash_shaped = signer.check_message(b"\x11" * 32)
        assert not hash_shaped.allowed and hash_shaped.policy == "api_key"
        delegation = signer.check_authorization({"chainId": SEPOLIA, "address": SEPOLIA_USDC, "nonce": 0})
        assert not delegation.allowed and delegation.rule == "allowed_delegates"


def test_a_policy_refusal_raises_policy_refused(cluster):
    tx = dict(transactions()["eip1559"], value=5 * 10**17)
    with signer_for(cluster) as signer:
        with pytest.raises(shardsign.PolicyRefused) as refused:
            signer.sign_transaction(tx)
    assert "max_value_per_tx: 0.5 ETH > 0.1 ETH" in str(refused.value)
    assert refused.value.code == "PERMISSION_DENIED"


def test_a_wrong_key_raises_unauthenticated_and_never_shows(cluster):
    wrong = cluster.agent_key[:-4] + ("0000" if not cluster.agent_key.endswith("0000") else "1111")
    signer = signer_for(cluster, api_key=wrong)
    with pytest.raises(shardsign.Unauthenticated) as error:
        signer.sign_transaction(transactions()["legacy"])
    secret = wrong[25:]
    assert secret not in str(error.value) and secret not in repr(error.value)
    assert secret not in repr(signer) and wrong[:24] in repr(signer)
    with pytest.raises(shardsign.ConfigurationError) as malformed:
        signer_for(cluster, api_key=wrong + "x")
    assert secret not in str(malformed.value)
    assert cluster.agent_key[25:] not in repr(signer_for(cluster))


def test_the_key_can_come_from_the_environment(cluster, monkeypatch):
    monkeypatch.setenv("SHARDSIGN_API_KEY", cluster.agent_key)
    signer = shardsign.ShardsignSigner(cluster.endpoint, key_id="demo", ca_cert=cluster.ca)
    assert signer.address.startswith("0x")
    monkeypatch.delenv("SHARDSIGN_API_KEY")
    with pytest.raises(shardsign.ConfigurationError):
        shardsign.ShardsignSigner(cluster.endpoint, key_id="demo", ca_cert=cluster.ca)


def test_bad_transactions_are_refused_with_the_field(cluster):
    with signer_for(cluster) as signer:
        with pytest.raises(shardsign.InvalidRequest) as missing:
            signer.sign_transaction({"chainId": SEPOLIA, "to": DEMO_RECIPIENT, "gas": 21000, "gasPrice": 1})
        assert "nonce" in str(missing.value)
        with pytest.raises(shardsign.InvalidRequest) as bad:
            signer.sign_transaction(dict(transactions()["legacy"], value=2**256))
        assert "value" in str(bad.value)


def test_the_expiry_header_is_surfaced(cluster):
    created = cluster.cli(
        "--api-key-file", str(cluster.dir / "secrets" / "admin.key"),
        "apikeys", "create", "--label", "expiring", "--scopes", "read", "--all-keys", "--expires-in", "2d",
    )
    signer = signer_for(cluster, api_key=created["api_key"])
    assert signer.address
    assert 2 * 86400 - 120 <= signer.key_expires_in <= 2 * 86400
    assert signer_for(cluster).key_expires_in is None


def test_the_async_signer_does_the_same(cluster):
    async def run():
        async with AsyncShardsignSigner(cluster.endpoint, api_key=cluster.agent_key, key_id="demo", ca_cert=cluster.ca) as signer:
            address = await signer.address()
            assert (await signer.check_transaction(transactions()["eip1559"])).allowed
            signed = await signer.sign_transaction(transactions()["eip1559"])
            message = encode_defunct(text="async")
            signature = await signer.sign_message(message)
            with pytest.raises(shardsign.PolicyRefused):
                await signer.sign_transaction(dict(transactions()["eip1559"], value=10**18))
            return address, signed, message, signature

    address, signed, message, signature = asyncio.run(run())
    assert Account.recover_transaction(signed.raw_transaction) == address
    assert Account.recover_message(message, signature=signature.signature) == address


def _closed_port():
    """A local port nothing listens on (connections to it are refused)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_several_endpoints_fail_over_to_one_that_answers(cluster):
    down = f"127.0.0.1:{_closed_port()}"
    tx = dict(transactions()["eip1559"], nonce=55)
    with shardsign.ShardsignSigner(
        f"{down},{cluster.endpoint}", api_key=cluster.agent_key, key_id="demo", ca_cert=cluster.ca
    ) as signer:
        assert signer.endpoints == [down, cluster.endpoint]
        signed = signer.sign_transaction(tx, request_id="py-failover-1")
        again = signer.sign_transaction(tx, request_id="py-failover-1")  # now on the live one
        address = signer.address
    assert again.raw_transaction == signed.raw_transaction
    assert Account.recover_transaction(signed.raw_transaction) == address

    async def run():
        async with AsyncShardsignSigner(
            f"{down},{cluster.endpoint}", api_key=cluster.agent_key, key_id="demo", ca_cert=cluster.ca
        ) as signer:
            return await signer.sign_transaction(tx, request_id="py-failover-1")

    assert asyncio.run(run()).raw_transaction == signed.raw_transaction
    # Every endpoint down: Unavailable, after the retries.
    with pytest.raises(shardsign.Unavailable):
        with shardsign.ShardsignSigner(
            f"{down},127.0.0.1:{_closed_port()}", api_key=cluster.agent_key, key_id="demo",
            ca_cert=cluster.ca, timeout=2.0,
        ) as signer:
            signer.sign_transaction(tx)


# Last in the file: it lists a delegate in the demo key's policies for the rest of the session.
def test_a_listed_delegate_signs_an_authorization_and_a_set_code_transaction(cluster):
    import json

    delegate = "0x63c0c19a282a1B52b07dD5a65b58948A07DAE32B"
    key_rules = cluster.cli("policy", "show", "--key", "demo")["rules"]
    agent = next(k for k in cluster.cli("apikeys", "list") if k["label"] == "demo agent")
    for rules in (key_rules, agent["policy"]):
        rules["allowed_delegates"] = [delegate]
    key_file = cluster.dir / "key-policy-with-delegate.json"
    agent_file = cluster.dir / "agent-policy-with-delegate.json"
    key_file.write_text(json.dumps(key_rules))
    agent_file.write_text(json.dumps(agent["policy"]))
    assert cluster.cli("policy", "set", "--key", "demo", "--policy-file", str(key_file))["nodes_updated"] == [1, 2, 3]
    cluster.cli("apikeys", "set-policy", agent["id"], "--policy-file", str(agent_file))

    # Another authority's tuple, signed by eth-account, rides in the same transaction.
    other = Account.sign_authorization({"chainId": SEPOLIA, "address": delegate, "nonce": 0}, b"\x07" * 32)
    with signer_for(cluster) as signer:
        own = signer.sign_authorization({"chainId": SEPOLIA, "address": delegate, "nonce": 8})
        tx = dict(transactions()["eip1559"], value=0, gas=80000, authorizationList=[own, other])
        with pytest.raises(shardsign.InvalidRequest) as mixed:
            signer.sign_transaction(tx)  # still says type 2: never silently dropped
        assert "only type 4" in str(mixed.value)
        tx["type"] = 4
        signed = signer.sign_transaction(tx)
        address = signer.address
        stranger = Account.sign_authorization({"chainId": SEPOLIA, "address": SEPOLIA_USDC, "nonce": 0}, b"\x07" * 32)
        with pytest.raises(shardsign.PolicyRefused) as refused:
            signer.sign_transaction(dict(tx, authorizationList=[own, stranger]))
        assert "authorization_list[1]: delegate" in str(refused.value)
    assert signed.raw_transaction[0] == 4
    assert Account.recover_transaction(signed.raw_transaction) == address
    fields = TypedTransaction.from_bytes(signed.raw_transaction).as_dict()
    tuples = fields["authorizationList"]
    assert [(t["chainId"], t["nonce"], t["yParity"], t["r"], t["s"]) for t in tuples] == [
        (SEPOLIA, 8, own.y_parity, own.r, own.s),
        (SEPOLIA, 0, other.y_parity, other.r, other.s),
    ]
    assert bytes(tuples[0]["address"]).hex() == delegate[2:].lower()


# After the delegate test: it adds approvers to the demo key's policy for the rest of the session.
def test_a_parked_request_signs_on_retry_once_a_quorum_approves(cluster):
    import json

    approvers = []
    for name in ("one", "two"):
        path = cluster.dir / f"approver-{name}.key"
        approvers.append((path, cluster.cli("approvals", "keygen", "--out", str(path))["public_key"]))
    rules = cluster.cli("policy", "show", "--key", "demo")["rules"]
    rules["require_approval_above"] = "0.001eth"
    rules["approvers"] = {"public_keys": [public for _, public in approvers], "quorum": 2, "valid_secs": 0}
    key_file = cluster.dir / "key-policy-with-approvers.json"
    key_file.write_text(json.dumps(rules))
    assert cluster.cli("policy", "set", "--key", "demo", "--policy-file", str(key_file))["nodes_updated"] == [1, 2, 3]

    tx = dict(transactions()["eip1559"], nonce=77)  # 0.01 ETH: over the threshold
    with signer_for(cluster) as signer:
        assert signer.check_transaction(tx).needs_approval
        with pytest.raises(shardsign.ApprovalRequired) as parked:
            signer.sign_transaction(tx, request_id="py-approval-1")
        approval_id = parked.value.approval_id
        assert parked.value.code == "FAILED_PRECONDITION"
        assert f"approval {approval_id}" in str(parked.value)
        assert "0.01 ETH > 0.001 ETH" in str(parked.value)
        shown = cluster.cli("approvals", "show", approval_id)
        assert shown["request"]["value"] == "0.01 ETH"
        for path, _ in approvers:
            decided = cluster.cli("approvals", "approve", approval_id, "--key", str(path))
        assert decided["state"] == "approved"
        signed = signer.sign_transaction(tx, request_id="py-approval-1")
        address = signer.address
    assert Account.recover_transaction(signed.raw_transaction) == address
