//! The public gRPC services, thin: authentication with the scope each RPC needs, deadlines,
//! audit of administrative changes, error mapping (`status`), and the key-expiry header on every
//! reply. What the calls do lives in `signing`, `ceremony` and `admin`.

mod admin;
mod approvals;
mod signer;
mod status;

use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use crate::access::auth::Caller;
use crate::error::CoordError;

pub use admin::AdminService;
pub use approvals::ApprovalsService;
pub use signer::SignerService;

/// The caller's deadline (`grpc-timeout`), else the configured default.
fn deadline<T>(request: &Request<T>, default: Duration) -> Instant {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(default, |timeout| timeout.min(default));
    Instant::now() + timeout
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The reply (or error) to an authenticated call, with the key-expiry header when it applies.
fn respond<T>(caller: &Caller, result: Result<T, CoordError>) -> Result<Response<T>, Status> {
    match result {
        Ok(value) => {
            let mut response = Response::new(value);
            caller.annotate(response.metadata_mut());
            Ok(response)
        }
        Err(error) => {
            let mut status = Status::from(error);
            caller.annotate(status.metadata_mut());
            Err(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("10q"), None);
    }
}
