//! Signing policies, shared by the coordinator (which checks API-key and key policies before it
//! contacts a node) and the nodes (which check the operator-signed key policy themselves, so a
//! compromised coordinator cannot make them sign what the policy forbids).
//!
//! - [`Rules`]: what a caller may sign; deny by default. `wire` parses and bounds them from the
//!   wire `Policy` (protobuf messages only: this crate does not depend on tonic).
//! - [`Refusal`]: the rule that said no, with the values, for the caller to read.
//! - [`statement`]: the one signed-statement format (kind, cluster, subject, version, validity,
//!   body, signatures) for everything the operator signs for the nodes.
//! - [`signed`]: the operator's Ed25519 policy key; key policies and disable statements.
//! - [`typed_data`]: which EIP-712 domains and primary types a key may sign.
//! - [`tokens`]: ERC-20 tokens by chain and contract, with per-call amount, recipient and spender
//!   rules over strictly decoded calldata.
//! - [`approval`]: human approval of parked requests: the request hash an approval is bound to,
//!   the approvers a key policy lists, and their `APPROVAL` statements.
//! - [`membership`]: membership changes (a node's new identity), signed by a quorum of offline
//!   membership keys that are not the policy key.

pub mod approval;
mod error;
pub mod file;
pub mod membership;
mod messages;
mod rules;
pub mod signed;
pub mod statement;
pub mod tokens;
pub mod typed_data;
pub mod typed_fields;
mod wire;

pub use error::{PolicyError, Refusal};
pub use messages::{DEFAULT_MAX_MESSAGE_LEN, MessageRules};
pub use rules::{Cap, ContractCallRule, Rules, RulesFor};
pub use signed::{
    DEFAULT_VALIDITY_SECS, KeyStatementHeader, MAX_VALIDITY_SECS, OperatorPolicyKey,
    PolicyVerifier, VerifiedKeyPolicy,
};
