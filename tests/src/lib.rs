//! Helpers shared by the integration tests: the eth-account bridge, transaction generators and
//! x402 payment documents.

pub mod cli;
pub mod cluster;
pub mod eth_account;
pub mod full;
pub mod leak;
pub mod postgres;
pub mod random_tx;
pub mod relay;
pub mod tmpfs;
pub mod tx_json;
pub mod x402;
