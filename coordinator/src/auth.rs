//! Authentication of callers, in one place (interceptors) so that the Agent access work can
//! replace it locally. Tokens are kept only as SHA-256 digests and compared in constant time;
//! a presented token never reaches a log line or an error message.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::config::Token;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Signer,
}

/// The configured credentials, hashed.
pub struct Credentials {
    admin: [u8; 32],
    signer: [u8; 32],
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Credentials {
    pub fn new(admin: Token, signer: Token) -> Self {
        Credentials {
            admin: digest(&admin.0),
            signer: digest(&signer.0),
        }
    }

    /// The role of the bearer of `token`, if any. Both digests are always compared.
    fn role_of(&self, token: &str) -> Option<Role> {
        let presented = digest(token);
        let admin = presented.ct_eq(&self.admin);
        let signer = presented.ct_eq(&self.signer);
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(signer) {
            Some(Role::Signer)
        } else {
            None
        }
    }

    fn check(&self, request: &Request<()>, required: Role) -> Result<Role, Status> {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing credential: send `authorization: Bearer <token>`")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("malformed authorization header: expected `Bearer <token>`")
            })?;
        let role = self.role_of(token).ok_or_else(|| {
            tracing::warn!(target: "security", "authentication failed: unknown token");
            Status::unauthenticated("invalid credential")
        })?;
        match (required, role) {
            (Role::Admin, Role::Signer) => Err(Status::permission_denied(
                "this credential may sign but not administer",
            )),
            _ => Ok(role),
        }
    }
}

/// An interceptor admitting callers with at least `required`.
pub fn require(
    credentials: Arc<Credentials>,
    required: Role,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let role = credentials.check(&request, required)?;
        request.extensions_mut().insert(role);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn credentials() -> Credentials {
        Credentials::new(
            Token(Zeroizing::new("admin-token-0123456789".into())),
            Token(Zeroizing::new("signer-token-0123456789".into())),
        )
    }

    fn request(header: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        request
    }

    #[test]
    fn roles_are_enforced() {
        let c = credentials();
        assert_eq!(
            c.check(&request(Some("Bearer admin-token-0123456789")), Role::Admin)
                .unwrap(),
            Role::Admin
        );
        assert_eq!(
            c.check(
                &request(Some("Bearer signer-token-0123456789")),
                Role::Signer
            )
            .unwrap(),
            Role::Signer
        );
        assert_eq!(
            c.check(
                &request(Some("Bearer admin-token-0123456789")),
                Role::Signer
            )
            .unwrap(),
            Role::Admin
        );
        let denied = c
            .check(
                &request(Some("Bearer signer-token-0123456789")),
                Role::Admin,
            )
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        for header in [None, Some("Bearer nope"), Some("Basic abc")] {
            let status = c.check(&request(header), Role::Signer).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(!status.message().contains("nope"));
        }
    }
}
