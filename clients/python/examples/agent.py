"""An agent that built its transaction dict for eth-account, signing it through shardsign.

Run against `shardsign dev up --demo` (README):
    SHARDSIGN_API_KEY=$(cat .shardsign/secrets/agent.key) python clients/python/examples/agent.py
"""

from shardsign import ShardsignSigner

tx = {
    "chainId": 11155111,  # Sepolia
    "nonce": 0,
    "to": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "value": 10**16,  # 0.01 ETH
    "gas": 21000,
    "maxFeePerGas": 30 * 10**9,
    "maxPriorityFeePerGas": 10**9,
}

# Before: signed = Account.sign_transaction(tx, private_key)
signer = ShardsignSigner("127.0.0.1:7100", key_id="demo", ca_cert=".shardsign/certs/ca.pem")
signed = signer.sign_transaction(tx)

print("from", signer.address)
print("raw ", "0x" + bytes(signed.raw_transaction).hex())
