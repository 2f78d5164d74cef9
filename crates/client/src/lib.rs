//! A typed async client for shardsign's public API, for agent code that would otherwise hold a
//! private key: "sign this transaction, give me my address".
//!
//! ```no_run
//! # async fn demo() -> Result<(), shardsign_client::ClientError> {
//! use shardsign_client::{Client, ClientConfig, Credential};
//! let client = Client::connect(ClientConfig::new(
//!     "https://127.0.0.1:7100",
//!     Credential::api_key(std::env::var("SHARDSIGN_API_KEY").unwrap_or_default())?,
//! ).with_ca_pem(std::fs::read_to_string(".shardsign/certs/ca.pem").unwrap_or_default()))
//! .await?;
//! let key = client.get_key("my-key").await?;
//! println!("address {}", key.address);
//! # Ok(()) }
//! ```
//!
//! - Requests carry a fresh request id, reused across retries, so a retried signature is never
//!   produced twice.
//! - `UNAVAILABLE` is retried with exponential backoff inside a total deadline.
//! - The `x-key-expires-in` header is kept ([`Client::key_expires_in`]) and reported to an
//!   optional callback.
//! - Errors say whether a policy refused, the key is bad or expired, or the service is down.

mod builder;
mod credential;
mod error;
mod signer;

pub use builder::TransactionBuilder;
pub use credential::Credential;
pub use error::ClientError;
pub use signer::{
    AdminStub, Client, ClientConfig, MessageSignature, RetryPolicy, SignedAuthorization,
    SignedTransaction,
};

/// The generated protobuf types, for callers that need the full API (operators' tools).
pub use shardsign_proto::v1 as api;
