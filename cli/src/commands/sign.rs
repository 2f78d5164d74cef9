//! `shardsign sign`: transactions (EIP-1559, legacy with --gas-price, EIP-7702 set-code with
//! --authorization), EIP-191 messages, EIP-712 typed data and EIP-7702 authorizations.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use shardsign_client::TransactionBuilder;
use shardsign_eth::parse_amount;

use crate::context::Global;
use crate::output::Out;

#[derive(Subcommand)]
pub enum SignCommand {
    /// Sign a transaction: EIP-1559 by default, legacy (EIP-155) with --gas-price, EIP-7702
    /// set-code with --authorization.
    Tx(TxArgs),
    /// Sign an EIP-191 personal message.
    Message {
        #[arg(long)]
        key: String,
        /// The message text (UTF-8).
        #[arg(long, conflicts_with = "hex")]
        message: Option<String>,
        /// The message bytes as hex.
        #[arg(long)]
        hex: Option<String>,
    },
    /// Sign an EIP-7702 authorization: the key's account lets the delegate contract's code run
    /// as its own (the key's policy must list the delegate; chain id 0, every chain, only with
    /// allow_any_chain_authorization).
    Authorization {
        #[arg(long)]
        key: String,
        #[arg(long)]
        chain_id: u64,
        /// The delegate contract.
        #[arg(long)]
        address: String,
        #[arg(long)]
        nonce: u64,
    },
    /// Sign EIP-712 typed data: a JSON document as eth_signTypedData_v4 takes it (types,
    /// primaryType, domain, message). The key's policy must allow its domain and primary type.
    TypedData {
        #[arg(long)]
        key: String,
        /// The document; `-` reads standard input.
        file: std::path::PathBuf,
    },
}

/// A 65-byte signature: JSON with the hash under `hash_field`, or one line.
fn show_signature(out: &Out, signature: &shardsign_client::MessageSignature, hash_field: &str) {
    let mut shown = json!({
        "signature": format!("0x{}", hex::encode(signature.signature)),
        "signer": signature.signer,
    });
    shown[hash_field] = json!(format!("0x{}", hex::encode(signature.message_hash)));
    out.show(&shown, || {
        format!(
            "0x{}  (signer {})",
            hex::encode(signature.signature),
            signature.signer
        )
    });
}

/// A typed-data document from a file or standard input, bounded like the service bounds it.
fn read_document(file: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let limit = shardsign_eth::typed_data::Limits::DEFAULT.max_document_bytes;
    let mut text = String::new();
    let reader: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
        )
    };
    reader
        .take(limit as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))?;
    if text.len() > limit {
        bail!(
            "{}: over the {limit}-byte limit of a typed-data document",
            file.display()
        );
    }
    Ok(text)
}

#[derive(Args)]
pub struct TxArgs {
    #[arg(long)]
    key: String,
    /// Your request id (default: a fresh one). Retry a request the key policy parked for human
    /// approval with the id it was first sent under: once approvers approve it, it signs.
    #[arg(long)]
    request_id: Option<String>,
    #[arg(long)]
    chain_id: u64,
    #[arg(long, default_value_t = 0)]
    nonce: u64,
    /// Recipient; omit to create a contract.
    #[arg(long)]
    to: Option<String>,
    /// Amount: wei, or with a unit (0.1eth, 20gwei).
    #[arg(long, default_value = "0")]
    value: String,
    #[arg(long, default_value_t = 21_000)]
    gas: u64,
    /// EIP-1559 fee cap.
    #[arg(long, default_value = "30gwei")]
    max_fee: String,
    /// EIP-1559 tip.
    #[arg(long, default_value = "1gwei")]
    priority_fee: String,
    /// Legacy gas price: makes an EIP-155 legacy transaction.
    #[arg(long)]
    gas_price: Option<String>,
    /// Call data as hex.
    #[arg(long, default_value = "")]
    data: String,
    /// A signed EIP-7702 authorization, as `shardsign --json sign authorization` prints it
    /// (repeatable, any authority's): makes a set-code (type 4) transaction, which needs --to.
    /// Every delegate must be in the key's allowed_delegates.
    #[arg(
        long = "authorization",
        value_name = "JSON",
        conflicts_with = "gas_price"
    )]
    authorizations: Vec<String>,
}

/// One `--authorization` tuple: the JSON `sign authorization` prints (extra fields ignored).
fn parse_authorization(
    index: usize,
    text: &str,
) -> anyhow::Result<shardsign_eth::SignedAuthorization> {
    let context = || format!("--authorization #{}", index + 1);
    let value: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("{}: not JSON", context()))?;
    let number = |field: &str| {
        value[field]
            .as_u64()
            .with_context(|| format!("{}: {field} must be a number", context()))
    };
    let scalar = |field: &str| -> anyhow::Result<[u8; 32]> {
        let text = value[field]
            .as_str()
            .with_context(|| format!("{}: {field} must be a 0x-hex string", context()))?;
        hex_bytes(field, text)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("{}: {field} must be 32 bytes", context()))
    };
    let address = value["address"]
        .as_str()
        .with_context(|| format!("{}: address missing", context()))?;
    let y_parity = u8::try_from(number("yParity")?)
        .map_err(|_| anyhow::anyhow!("{}: yParity must be 0 or 1", context()))?;
    Ok(shardsign_eth::SignedAuthorization {
        authorization: shardsign_eth::Authorization {
            chain_id: number("chainId")?,
            address: shardsign_eth::Address::parse("address", address).with_context(context)?,
            nonce: number("nonce")?,
        },
        signature: shardsign_eth::Signature::new(scalar("r")?, scalar("s")?, y_parity)
            .with_context(context)?,
    })
}

fn hex_bytes(field: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text.trim_start_matches("0x")).with_context(|| format!("{field}: not hex"))
}

/// The transaction `sign tx` describes, checked.
fn build_tx(args: &TxArgs) -> anyhow::Result<shardsign_eth::UnsignedTransaction> {
    let mut builder = match &args.gas_price {
        Some(price) => {
            TransactionBuilder::legacy(args.chain_id).gas_price(parse_amount("gas_price", price)?)
        }
        None if !args.authorizations.is_empty() => TransactionBuilder::eip7702(args.chain_id)
            .fees_str(&args.max_fee, &args.priority_fee)?,
        None => TransactionBuilder::eip1559(args.chain_id)
            .fees_str(&args.max_fee, &args.priority_fee)?,
    };
    for (index, text) in args.authorizations.iter().enumerate() {
        builder = builder.authorization(parse_authorization(index, text)?);
    }
    let mut builder = builder
        .nonce(args.nonce)
        .gas_limit(args.gas)
        .value_str(&args.value)?
        .data(hex_bytes("data", &args.data)?);
    if let Some(to) = &args.to {
        builder = builder.to_str(to)?;
    }
    Ok(builder.build()?)
}

fn message_bytes(message: Option<String>, hex: Option<String>) -> anyhow::Result<Vec<u8>> {
    match (message, hex) {
        (Some(text), None) => Ok(text.into_bytes()),
        (None, Some(hex)) => hex_bytes("hex", &hex),
        _ => bail!("give --message TEXT or --hex BYTES"),
    }
}

/// `shardsign policy check ...`: the dry run of what `shardsign sign ...` would send. Refused
/// requests exit non-zero after the answer is shown.
pub async fn check(command: SignCommand, global: &Global, out: Out) -> anyhow::Result<()> {
    use shardsign_client::api::{self, check_policy_request::Request};
    let request = match command {
        SignCommand::Tx(args) => {
            let tx = build_tx(&args)?;
            Request::Transaction(api::SignTransactionRequest {
                key_id: args.key,
                request_id: String::new(),
                transaction: Some(api::sign_transaction_request::Transaction::UnsignedRlp(
                    tx.signing_payload(),
                )),
            })
        }
        SignCommand::Message { key, message, hex } => Request::Message(api::SignMessageRequest {
            key_id: key,
            request_id: String::new(),
            message: message_bytes(message, hex)?,
        }),
        SignCommand::TypedData { key, file } => Request::TypedData(api::SignTypedDataRequest {
            key_id: key,
            request_id: String::new(),
            typed_data: read_document(&file)?,
        }),
        SignCommand::Authorization {
            key,
            chain_id,
            address,
            nonce,
        } => Request::Authorization(api::SignAuthorizationRequest {
            key_id: key,
            request_id: String::new(),
            chain_id,
            address,
            nonce,
        }),
    };
    let client = global.client().await?;
    let answer = client.check_policy(request).await?;
    let allowed = answer.decision == api::check_policy_response::Decision::Allow as i32;
    let needs_approval =
        answer.decision == api::check_policy_response::Decision::NeedsApproval as i32;
    let decision = match (allowed, needs_approval) {
        (true, _) => "allow",
        (_, true) => "needs_approval",
        _ => "refuse",
    };
    let budgets: Vec<serde_json::Value> = answer
        .budgets
        .iter()
        .map(|b| {
            json!({"policy": b.policy, "chain_id": b.chain_id, "asset": b.asset, "token": b.token,
                   "cap": b.cap, "spent": b.spent, "remaining": b.remaining, "decimals": b.decimals})
        })
        .collect();
    out.show(
        &json!({
            "decision": decision,
            "rule": answer.rule, "detail": answer.detail, "policy": answer.policy,
            "budgets": budgets,
        }),
        || {
            let mut text = if allowed {
                "allow".to_string()
            } else if needs_approval {
                format!("needs approval: {}: {}", answer.rule, answer.detail)
            } else {
                format!(
                    "refuse ({} policy): {}: {}",
                    answer.policy, answer.rule, answer.detail
                )
            };
            for b in &answer.budgets {
                let units = |base: &str| {
                    base.parse::<shardsign_eth::U256>()
                        .map(|v| shardsign_eth::format_units(v, b.decimals, &b.asset))
                        .unwrap_or_else(|_| base.to_string())
                };
                text.push_str(&format!(
                    "\n{} 24 h on chain {}: {} of {} left ({} spent; the coordinator's count)",
                    b.policy,
                    b.chain_id,
                    units(&b.remaining),
                    units(&b.cap),
                    units(&b.spent)
                ));
            }
            text
        },
    );
    if needs_approval {
        bail!("the request would wait for human approval (shardsign approvals)");
    }
    if !allowed {
        bail!("the request would be refused");
    }
    Ok(())
}

pub async fn sign(command: SignCommand, global: &Global, out: Out) -> anyhow::Result<()> {
    let client = global.client().await?;
    match command {
        SignCommand::Tx(args) => {
            let tx = build_tx(&args)?;
            let signed = match &args.request_id {
                Some(request_id) => {
                    client
                        .sign_transaction_with_id(&args.key, &tx, request_id)
                        .await?
                }
                None => client.sign_transaction(&args.key, &tx).await?,
            };
            out.show(
                &json!({
                    "raw_transaction": format!("0x{}", hex::encode(&signed.raw_transaction)),
                    "tx_hash": format!("0x{}", hex::encode(signed.tx_hash)),
                    "sender": signed.sender, "v": signed.v,
                    "r": format!("0x{}", hex::encode(signed.r)),
                    "s": format!("0x{}", hex::encode(signed.s)),
                }),
                || {
                    format!(
                        "0x{}\ntx hash 0x{}  from {}",
                        hex::encode(&signed.raw_transaction),
                        hex::encode(signed.tx_hash),
                        signed.sender
                    )
                },
            );
        }
        SignCommand::Authorization {
            key,
            chain_id,
            address,
            nonce,
        } => {
            let authorization = shardsign_eth::Authorization {
                chain_id,
                address: shardsign_eth::Address::parse("address", &address)?,
                nonce,
            };
            let signed = client.sign_authorization(&key, authorization).await?;
            out.show(
                &json!({
                    "chainId": signed.authorization.chain_id,
                    "address": signed.authorization.address.to_checksum(),
                    "nonce": signed.authorization.nonce,
                    "yParity": signed.y_parity,
                    "r": format!("0x{}", hex::encode(signed.r)),
                    "s": format!("0x{}", hex::encode(signed.s)),
                    "hash": format!("0x{}", hex::encode(signed.hash)),
                    "signer": signed.signer,
                }),
                || {
                    format!(
                        "authorization for {} on chain {} (nonce {}): yParity {} r 0x{} s 0x{}  (authority {})",
                        signed.authorization.address.to_checksum(),
                        signed.authorization.chain_id,
                        signed.authorization.nonce,
                        signed.y_parity,
                        hex::encode(signed.r),
                        hex::encode(signed.s),
                        signed.signer
                    )
                },
            );
        }
        SignCommand::TypedData { key, file } => {
            let document = read_document(&file)?;
            let signature = client.sign_typed_data(&key, &document).await?;
            show_signature(&out, &signature, "hash");
        }
        SignCommand::Message { key, message, hex } => {
            let bytes = message_bytes(message, hex)?;
            let signature = client.sign_message(&key, &bytes).await?;
            show_signature(&out, &signature, "message_hash");
        }
    }
    Ok(())
}
