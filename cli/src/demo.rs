//! `shardsign dev up --demo`: what an operator and an agent do first, against the dev cluster.
//! Each step is skipped when its result exists (the demo key, its policy, the agent's key), so a
//! second `dev up --demo` only signs again.

use std::path::{Path, PathBuf};

use serde_json::json;
use shardsign_client::{Client, Credential, api};
use shardsign_eth::{Address, Eip1559Transaction, UnsignedTransaction, parse_amount};
use shardsign_policy::{DEFAULT_VALIDITY_SECS, OperatorPolicyKey};

use crate::commands::{create_key, set_key_policy, write_secret_file};
use crate::context::{DevState, Global, read_secret};
use crate::output::Out;

const DEMO_KEY: &str = "demo";
const DEMO_RECIPIENT: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
const CHAINS: [u64; 2] = [1, 11155111];
const SEPOLIA: u64 = 11155111;

pub async fn run(global: &Global, state: &DevState, root: &Path, out: Out) -> anyhow::Result<()> {
    let admin = global
        .client_as(Credential::api_key(
            read_secret(&state.admin_key_file)?.as_str(),
        )?)
        .await?;
    demo_key(global, &admin, out).await?;
    key_policy(&admin, state, out).await?;
    let agent_file = agent_key(&admin, root, out).await?;
    first_signature(global, &agent_file, out).await
}

/// The demo key, created by a ceremony unless it exists.
async fn demo_key(global: &Global, admin: &Client, out: Out) -> anyhow::Result<()> {
    let key = match admin.get_key(DEMO_KEY).await {
        Ok(key) => key,
        Err(shardsign_client::ClientError::NotFound(_)) => {
            let request = api::CreateKeyRequest {
                label: "demo key".into(),
                allowed_chain_ids: CHAINS.to_vec(),
                key_id: DEMO_KEY.into(),
            };
            create_key(global, admin, out, request).await?
        }
        Err(error) => return Err(error.into()),
    };
    out.event(
        &json!({"event": "key", "key_id": key.key_id, "address": key.address}),
        || format!("demo key `{}`: address {}", key.key_id, key.address),
    );
    Ok(())
}

/// USDC on Sepolia (Circle's test token), as x402 payments sign it: EIP-3009 authorizations.
pub const DEMO_USDC: &str = "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238";

/// The typed data the demo allows: EIP-3009 transfers of Sepolia USDC (an x402 payment).
fn demo_usdc_payments() -> api::TypedDataRule {
    api::TypedDataRule {
        chain_id: SEPOLIA,
        verifying_contract: DEMO_USDC.into(),
        name: "USDC".into(),
        version: "2".into(),
        primary_types: vec![
            "TransferWithAuthorization".into(),
            "ReceiveWithAuthorization".into(),
        ],
        conditions: Vec::new(),
    }
}

/// The demo key's policy, signed with the operator's policy key, unless one is set.
async fn key_policy(admin: &Client, state: &DevState, out: Out) -> anyhow::Result<()> {
    let held = admin
        .admin()
        .get_key_policy(api::GetKeyPolicyRequest {
            key_id: DEMO_KEY.into(),
        })
        .await;
    if held.is_ok() {
        return Ok(());
    }
    let policy_key = OperatorPolicyKey::from_secret_hex(&read_secret(&state.policy_key_file)?)?;
    let rules = api::Policy {
        allowed_chain_ids: CHAINS.to_vec(),
        max_value_per_tx: "1eth".into(),
        allowed_recipients: vec!["*".into()],
        max_fee_per_gas: "200gwei".into(),
        max_total_fee: "0.05eth".into(),
        allow_message_signing: true,
        allowed_typed_data: vec![demo_usdc_payments()],
        ..Default::default()
    };
    let set = set_key_policy(
        admin,
        &policy_key,
        &state.cluster_id,
        DEMO_KEY,
        rules,
        None,
        DEFAULT_VALIDITY_SECS,
    )
    .await?;
    out.event(
        &json!({"event": "key_policy", "version": set.version}),
        || {
            format!(
                "key policy v{} signed with the operator key and set on nodes {:?}",
                set.version, set.nodes_updated
            )
        },
    );
    Ok(())
}

/// An agent's API key (sign, the demo key only, small caps), unless its file exists.
async fn agent_key(admin: &Client, root: &Path, out: Out) -> anyhow::Result<PathBuf> {
    let agent_file = root.join("secrets/agent.key");
    if agent_file.exists() {
        return Ok(agent_file);
    }
    let created = admin
        .admin()
        .create_api_key(api::CreateApiKeyRequest {
            label: "demo agent".into(),
            scopes: vec!["sign".into(), "read".into()],
            key_ids: vec![DEMO_KEY.into()],
            policy: Some(api::Policy {
                allowed_chain_ids: vec![SEPOLIA],
                max_value_per_tx: "0.1eth".into(),
                max_value_per_24h: "1eth".into(),
                allowed_recipients: vec![DEMO_RECIPIENT.into()],
                max_fee_per_gas: "100gwei".into(),
                max_total_fee: "0.01eth".into(),
                requests_per_minute: 60,
                allow_message_signing: true,
                allowed_typed_data: vec![demo_usdc_payments()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(shardsign_client::ClientError::from)?
        .into_inner();
    write_secret_file(&agent_file, &created.api_key)?;
    out.event(&json!({"event": "agent_key", "file": agent_file}), || {
        format!(
            "agent API key (sign, demo key only, 0.1 ETH/tx, 1 ETH/24 h, Sepolia) in {}",
            agent_file.display()
        )
    });
    Ok(agent_file)
}

/// The agent signs 0.01 ETH on Sepolia.
async fn first_signature(global: &Global, agent_file: &Path, out: Out) -> anyhow::Result<()> {
    let agent = global
        .client_as(Credential::api_key(read_secret(agent_file)?.as_str())?)
        .await?;
    let tx = UnsignedTransaction::Eip1559(Eip1559Transaction {
        chain_id: SEPOLIA,
        nonce: 0,
        max_priority_fee_per_gas: parse_amount("tip", "1gwei")?,
        max_fee_per_gas: parse_amount("fee", "30gwei")?,
        gas_limit: 21_000,
        to: Some(Address::parse("to", DEMO_RECIPIENT)?),
        value: parse_amount("value", "0.01eth")?,
        data: Vec::new(),
        access_list: Vec::new(),
    });
    let signed = agent.sign_transaction(DEMO_KEY, &tx).await?;
    out.show(
        &json!({"event": "signed", "raw_transaction": format!("0x{}", hex::encode(&signed.raw_transaction)),
                "tx_hash": format!("0x{}", hex::encode(signed.tx_hash)), "sender": signed.sender}),
        || {
            format!(
                "\nsigned as the demo agent: 0.01 ETH to {DEMO_RECIPIENT} on Sepolia (EIP-1559)\n\
                 raw transaction: 0x{}\ntx hash: 0x{}\nfrom: {}",
                hex::encode(&signed.raw_transaction),
                hex::encode(signed.tx_hash),
                signed.sender
            )
        },
    );
    Ok(())
}
