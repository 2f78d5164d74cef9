//! Who is calling: API keys (see `apikeys`) and the bootstrap credential, checked per RPC with
//! the scope it needs. The keys live in memory (loaded from the registry at start, refreshed by
//! every change made through this process), so the hot path does no database read.
//!
//! A presented key never reaches a log line, an error message or the audit log: failures are
//! logged with the peer and, when the key parsed, its public id.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::access::apikeys::{self, ApiKey, Match, Scope, SecretHasher};
use crate::access::freshness::Freshness;
use crate::access::guard::FailureGuard;
use crate::audit::AuditEntry;
use crate::config::Token;
use crate::error::CoordError;
use crate::metrics::CoordinatorMetrics;
use crate::registry::{Registry, now_ms};
use shardsign_serve::utc;

/// Responses carry `x-key-expires-in` once the key is this close to its expiry.
pub const EXPIRY_WARNING_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// The response header naming the seconds left.
pub const EXPIRES_IN_HEADER: &str = "x-key-expires-in";
/// Longest credential read from a request.
const MAX_CREDENTIAL_LEN: usize = 512;

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The bootstrap credential from the config: may create the first admin key only.
    Bootstrap,
    ApiKey(Arc<ApiKey>),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The peer address, for the audit log.
    pub peer: String,
    /// Seconds until the key expires, when that is within the warning window.
    pub expires_in: Option<i64>,
    /// When the request arrived (for latency metrics).
    pub started: Instant,
}

impl Caller {
    /// The public id for logs and the audit log: the API key id, or `bootstrap`.
    pub fn id(&self) -> &str {
        match &self.principal {
            Principal::Bootstrap => "bootstrap",
            Principal::ApiKey(key) => &key.id,
        }
    }

    pub fn api_key(&self) -> Option<&ApiKey> {
        match &self.principal {
            Principal::ApiKey(key) => Some(key),
            Principal::Bootstrap => None,
        }
    }

    /// `entry` as this caller's: the time, the caller's id and peer filled in.
    pub fn audit_entry(&self, entry: AuditEntry) -> AuditEntry {
        AuditEntry {
            at_ms: now_ms(),
            api_key_id: self.id().to_string(),
            peer: self.peer.clone(),
            ..entry
        }
    }

    /// What `WhoAmI` answers.
    pub fn info(&self) -> shardsign_proto::v1::ApiKeyInfo {
        match &self.principal {
            Principal::ApiKey(key) => key.to_api(now_ms()),
            Principal::Bootstrap => shardsign_proto::v1::ApiKeyInfo {
                id: "bootstrap".into(),
                label: "bootstrap credential".into(),
                ..Default::default()
            },
        }
    }

    /// Adds the expiry header to a reply or an error.
    pub fn annotate(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Some(seconds) = self.expires_in {
            metadata.insert(EXPIRES_IN_HEADER, MetadataValue::from(seconds.max(0)));
        }
    }
}

pub struct Authenticator {
    hasher: SecretHasher,
    environment: &'static str,
    bootstrap: Option<[u8; 32]>,
    keys: RwLock<HashMap<String, Arc<ApiKey>>>,
    /// When the bootstrap credential was used (0: never): it is single-use.
    bootstrap_used_at_ms: AtomicI64,
    guard: FailureGuard,
    metrics: Arc<CoordinatorMetrics>,
    /// Set when the registry is shared with other coordinators (see `freshness`).
    freshness: std::sync::OnceLock<Freshness>,
}

fn bearer<T>(request: &Request<T>) -> Result<&str, Status> {
    let header = request.metadata().get("authorization").ok_or_else(|| {
        Status::unauthenticated("missing credential: send `authorization: Bearer <api key>`")
    })?;
    let value = header
        .to_str()
        .ok()
        .filter(|v| v.len() <= MAX_CREDENTIAL_LEN)
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Status::unauthenticated("malformed authorization header: expected `Bearer <api key>`")
        })?;
    Ok(value)
}

impl Authenticator {
    pub fn new(
        registry: &Registry,
        hasher: SecretHasher,
        environment: &'static str,
        bootstrap: Option<Token>,
        metrics: Arc<CoordinatorMetrics>,
    ) -> Result<Self, CoordError> {
        let keys = registry
            .load_api_keys()?
            .into_iter()
            .map(|key| (key.id.clone(), Arc::new(key)))
            .collect();
        let authenticator = Authenticator {
            hasher,
            environment,
            bootstrap: bootstrap.map(|t| Sha256::digest(t.0.as_bytes()).into()),
            keys: RwLock::new(keys),
            bootstrap_used_at_ms: AtomicI64::new(0),
            guard: FailureGuard::default(),
            metrics,
            freshness: std::sync::OnceLock::new(),
        };
        let now = now_ms();
        let used = match registry.bootstrap_used_at()? {
            Some(at) => Some(at),
            // A registry from before the credential was single-use: an admin key made with it.
            None if authenticator.admin_key_exists(now) => {
                registry.use_bootstrap(now)?;
                Some(now)
            }
            None => None,
        };
        if let Some(at) = used {
            authenticator
                .bootstrap_used_at_ms
                .store(at, Ordering::SeqCst);
        }
        Ok(authenticator)
    }

    /// When the bootstrap credential was used, if it was.
    pub fn bootstrap_used_at(&self) -> Option<i64> {
        Some(self.bootstrap_used_at_ms.load(Ordering::SeqCst)).filter(|at| *at != 0)
    }

    fn bootstrap_retired(at_ms: i64) -> String {
        format!(
            "the bootstrap credential was used at {} and is retired for good; use an admin API key, or recover admin access on the coordinator's host (shardsign-coordinator admin recover), and remove bootstrap_token_* from the coordinator's config",
            utc(at_ms)
        )
    }

    /// Uses up the bootstrap credential (persisted first): called as it creates the first
    /// admin key. Refused if it was used meanwhile.
    pub fn use_bootstrap(&self, registry: &Registry) -> Result<(), CoordError> {
        let now = now_ms();
        if !registry.use_bootstrap(now)? {
            let at = registry.bootstrap_used_at()?.unwrap_or(now);
            return Err(CoordError::Unauthenticated(Self::bootstrap_retired(at)));
        }
        self.bootstrap_used_at_ms.store(now, Ordering::SeqCst);
        Ok(())
    }

    pub fn hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    pub fn environment(&self) -> &'static str {
        self.environment
    }

    /// The key as it is now (after any revocation or policy change).
    pub fn current(&self, id: &str) -> Option<Arc<ApiKey>> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<ApiKey>> {
        let mut keys: Vec<_> = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect();
        keys.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        keys
    }

    /// Follows a registry shared with other coordinators: before each request, the key table
    /// (and `freshness`'s followers) are reloaded if another coordinator changed them.
    pub fn follow(&self, freshness: Freshness) {
        let _ = self.freshness.set(freshness);
    }

    /// Catches up with changes other coordinators made to a shared registry (nothing to do
    /// with an unshared one).
    pub fn sync(&self) -> Result<(), CoordError> {
        match self.freshness.get() {
            Some(freshness) => freshness.check(|registry| self.reload_keys(registry)),
            None => Ok(()),
        }
    }

    /// Replaces the whole key table with the registry's.
    fn reload_keys(&self, registry: &Registry) -> Result<(), CoordError> {
        let keys = registry
            .load_api_keys()?
            .into_iter()
            .map(|key| (key.id.clone(), Arc::new(key)))
            .collect();
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
        Ok(())
    }

    /// Reloads one key from the registry after a change.
    pub fn refresh(
        &self,
        registry: &Registry,
        id: &str,
    ) -> Result<Option<Arc<ApiKey>>, CoordError> {
        let key = registry.load_api_key(id)?.map(Arc::new);
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &key {
            Some(key) => keys.insert(id.to_string(), key.clone()),
            None => keys.remove(id),
        };
        Ok(key)
    }

    /// Whether an admin API key that still works exists.
    fn admin_key_exists(&self, now_ms: i64) -> bool {
        self.all().iter().any(|key| {
            key.scopes.admin && key.status(now_ms) == shardsign_proto::v1::ApiKeyStatus::Active
        })
    }

    fn fail(&self, peer: Option<IpAddr>, id: Option<&str>, reason: &str) {
        self.metrics.auth_failed();
        let failures = self.guard.failed(peer, Instant::now());
        tracing::warn!(
            target: "security",
            peer = peer.map(|p| p.to_string()).unwrap_or_default(),
            api_key_id = id.unwrap_or(""),
            failures,
            reason,
            "authentication failed"
        );
    }

    /// Authenticates a request for an RPC needing `scope`. `bootstrap_allowed` marks the one RPC
    /// the bootstrap credential may call.
    pub async fn authenticate<T>(
        &self,
        request: &Request<T>,
        scope: Scope,
        bootstrap_allowed: bool,
    ) -> Result<Caller, Status> {
        let started = Instant::now();
        let peer_addr = request.remote_addr();
        let peer_ip = peer_addr.map(|a| a.ip());
        let delay = self.guard.delay_for(peer_ip, Instant::now());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let token = bearer(request).inspect_err(|_| {
            self.fail(peer_ip, None, "no or malformed authorization header");
        })?;
        self.sync()?;
        let now = now_ms();
        let caller = |principal, expires_in| Caller {
            principal,
            peer: peer_addr.map(|a| a.to_string()).unwrap_or_default(),
            expires_in,
            started,
        };
        if self.is_bootstrap(token) {
            self.check_bootstrap(peer_ip, bootstrap_allowed)?;
            return Ok(caller(Principal::Bootstrap, None));
        }
        let key = self.valid_api_key(peer_ip, token, now)?;
        self.guard.succeeded(peer_ip);
        let expires_in = key
            .expires_at_ms
            .filter(|at| at - now <= EXPIRY_WARNING_MS)
            .map(|at| (at - now) / 1000);
        let caller = caller(Principal::ApiKey(key.clone()), expires_in);
        if !key.scopes.allows(scope) {
            let mut status = Status::permission_denied(format!(
                "API key {} lacks the `{}` scope (it has: {})",
                key.id,
                scope.name(),
                key.scopes.names().join(", ")
            ));
            caller.annotate(status.metadata_mut());
            return Err(status);
        }
        Ok(caller)
    }

    /// Whether `token` is the bootstrap credential (compared in constant time).
    fn is_bootstrap(&self, token: &str) -> bool {
        self.bootstrap.as_ref().is_some_and(|bootstrap| {
            let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            bool::from(presented.ct_eq(bootstrap))
        })
    }

    /// The bootstrap credential may call only `CreateApiKey`, and only once.
    fn check_bootstrap(
        &self,
        peer_ip: Option<IpAddr>,
        bootstrap_allowed: bool,
    ) -> Result<(), Status> {
        if !bootstrap_allowed {
            return Err(Status::permission_denied(
                "the bootstrap credential may only create the first admin API key (CreateApiKey)",
            ));
        }
        if let Some(at) = self.bootstrap_used_at() {
            self.fail(peer_ip, None, "bootstrap credential used again");
            return Err(Status::unauthenticated(Self::bootstrap_retired(at)));
        }
        self.guard.succeeded(peer_ip);
        Ok(())
    }

    /// The API key `token` presents, if its secret matches and the key still works. Only a
    /// holder of the real secret learns why a valid key stopped working.
    fn valid_api_key(
        &self,
        peer_ip: Option<IpAddr>,
        token: &str,
        now: i64,
    ) -> Result<Arc<ApiKey>, Status> {
        let Some(presented) = apikeys::parse(token) else {
            self.fail(peer_ip, None, "malformed API key");
            return Err(Status::unauthenticated(
                "invalid API key: expected ss_live_<id>_<secret> or ss_test_<id>_<secret>",
            ));
        };
        if presented.environment != self.environment {
            self.fail(peer_ip, Some(presented.id), "wrong environment");
            return Err(Status::unauthenticated(format!(
                "this is an ss_{}_ key, but this deployment accepts ss_{}_ keys",
                presented.environment, self.environment
            )));
        }
        let Some(key) = self.current(presented.id) else {
            self.fail(peer_ip, Some(presented.id), "unknown API key id");
            return Err(Status::unauthenticated("invalid API key"));
        };
        let refusal = match self.hasher.matches(&presented, &key.secrets, now) {
            Match::Valid => None,
            Match::RotatedOut => Some((
                "rotated-out secret",
                format!(
                    "API key {} was rotated and this secret's grace period is over; use the new secret",
                    key.id
                ),
            )),
            Match::None => Some(("wrong secret", "invalid API key".to_string())),
        };
        let refusal = refusal.or_else(|| {
            key.revoked_at_ms.map(|at| {
                (
                    "revoked",
                    format!("API key {} was revoked at {}", key.id, utc(at)),
                )
            })
        });
        let refusal = refusal.or_else(|| {
            key.expires_at_ms.filter(|at| *at <= now).map(|at| {
                (
                    "expired",
                    format!(
                        "API key {} expired at {}; ask an operator for a new key",
                        key.id,
                        utc(at)
                    ),
                )
            })
        });
        if let Some((reason, message)) = refusal {
            self.fail(peer_ip, Some(&key.id), reason);
            return Err(Status::unauthenticated(message));
        }
        Ok(key)
    }
}
