//! API keys: the format agents hold, what a key may do, and how it is stored (a keyed hash of
//! the secret, never the secret).
//!
//! Format: `ss_<env>_<id>_<secret>` with `env` = `live` or `test`, `id` 16 hex digits (public:
//! names the key in lists, logs and the audit log) and `secret` 64 hex digits (256 bits).
//! Stored: HMAC-SHA-256(server key, secret). A fast keyed hash is enough for 256-bit secrets
//! (nothing to brute-force), and without the server key a stolen database cannot even be used to
//! test guesses.

use std::collections::BTreeSet;
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use shardsign_policy::{Rules, RulesFor};
use shardsign_proto::v1 as api;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::CoordError;

const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;
/// Length of every API key: `ss_live_` + id + `_` + secret.
pub const API_KEY_LEN: usize = 8 + ID_HEX + 1 + SECRET_HEX;

/// What a key may do. `admin` includes `read` and `approve`; nothing includes `sign`.
/// `approve` lists parked requests and hands in approvers' signed decisions (the signatures,
/// checked by the nodes, are the authority; the scope only lets a key reach the service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    pub read: bool,
    pub sign: bool,
    pub admin: bool,
    pub approve: bool,
}

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Sign,
    Admin,
    Approve,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Sign => "sign",
            Scope::Admin => "admin",
            Scope::Approve => "approve",
        }
    }
}

impl Scopes {
    pub fn parse(names: &[String]) -> Result<Scopes, CoordError> {
        let mut scopes = Scopes::default();
        if names.is_empty() || names.len() > 4 {
            return Err(CoordError::invalid(
                "scopes",
                "expected one to four of read, sign, admin, approve",
            ));
        }
        for name in names {
            match name.as_str() {
                "read" => scopes.read = true,
                "sign" => scopes.sign = true,
                "admin" => scopes.admin = true,
                "approve" => scopes.approve = true,
                _ => {
                    return Err(CoordError::invalid(
                        "scopes",
                        format!(
                            "unknown scope `{}`: expected read, sign, admin or approve",
                            name.escape_default()
                        ),
                    ));
                }
            }
        }
        Ok(scopes)
    }

    pub fn allows(&self, scope: Scope) -> bool {
        match scope {
            Scope::Read => self.read || self.admin,
            Scope::Sign => self.sign,
            Scope::Admin => self.admin,
            Scope::Approve => self.approve || self.admin,
        }
    }

    pub fn names(&self) -> Vec<String> {
        [
            (self.read, "read"),
            (self.sign, "sign"),
            (self.admin, "admin"),
            (self.approve, "approve"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_string())
        .collect()
    }

    pub fn to_column(self) -> String {
        self.names().join(",")
    }

    pub fn from_column(text: &str) -> Scopes {
        let names: Vec<String> = text.split(',').map(str::to_string).collect();
        Scopes::parse(&names).unwrap_or_default()
    }
}

/// A stored secret hash and until when it is accepted (`None`: the current secret).
#[derive(Clone)]
pub struct SecretHash {
    pub hash: [u8; 32],
    pub valid_until_ms: Option<i64>,
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretHash")
            .field("hash", &"***")
            .field("valid_until_ms", &self.valid_until_ms)
            .finish()
    }
}

/// An API key as the coordinator knows it.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub label: String,
    pub scopes: Scopes,
    /// `None`: every signing key.
    pub key_ids: Option<BTreeSet<String>>,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub created_by: String,
    pub revoked_at_ms: Option<i64>,
    pub policy: api::Policy,
    pub rules: Rules,
    pub secrets: Vec<SecretHash>,
}

impl ApiKey {
    /// Whether this API key may sign with `key_id` (scopes aside).
    pub fn may_use(&self, key_id: &str) -> bool {
        self.key_ids.as_ref().is_none_or(|ids| ids.contains(key_id))
    }

    /// Whether this API key may see `key_id`: its bound keys, or every key for an admin.
    pub fn may_read(&self, key_id: &str) -> bool {
        self.scopes.admin || self.may_use(key_id)
    }

    pub fn status(&self, now_ms: i64) -> api::ApiKeyStatus {
        if self.revoked_at_ms.is_some() {
            api::ApiKeyStatus::Revoked
        } else if self.expires_at_ms.is_some_and(|at| at <= now_ms) {
            api::ApiKeyStatus::Expired
        } else {
            api::ApiKeyStatus::Active
        }
    }

    pub fn to_api(&self, now_ms: i64) -> api::ApiKeyInfo {
        api::ApiKeyInfo {
            id: self.id.clone(),
            label: self.label.clone(),
            scopes: self.scopes.names(),
            key_ids: self
                .key_ids
                .as_ref()
                .map(|ids| ids.iter().cloned().collect())
                .unwrap_or_default(),
            all_keys: self.key_ids.is_none(),
            expires_at_unix: self.expires_at_ms.map_or(0, |ms| ms / 1000),
            created_at_unix: self.created_at_ms / 1000,
            created_by: self.created_by.clone(),
            status: self.status(now_ms) as i32,
            policy: Some(self.rules.to_proto(RulesFor::ApiKey)),
            previous_secret_valid_until_unix: self
                .secrets
                .iter()
                .filter_map(|s| s.valid_until_ms)
                .filter(|until| *until > now_ms)
                .max()
                .map_or(0, |ms| ms / 1000),
        }
    }
}

/// A freshly issued API key: shown once, wiped on drop, never printed.
pub struct IssuedSecret(pub Zeroizing<String>);

impl fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IssuedSecret(***)")
    }
}

/// A presented API key, split. It borrows the request's header and copies nothing, so it wipes
/// nothing either: the header's bytes are tonic's, freed (not wiped) with the request.
pub struct Presented<'a> {
    pub environment: &'a str,
    pub id: &'a str,
    secret: &'a str,
}

/// Splits a presented key. `None` if it is not shaped like one of ours.
pub fn parse(token: &str) -> Option<Presented<'_>> {
    // ASCII first: the splits below are by byte offset.
    if token.len() != API_KEY_LEN || !token.is_ascii() {
        return None;
    }
    let rest = token.strip_prefix("ss_")?;
    let (environment, rest) = rest.split_at(4);
    let rest = rest.strip_prefix('_')?;
    let (id, rest) = rest.split_at(ID_HEX);
    let secret = rest.strip_prefix('_')?;
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !matches!(environment, "live" | "test") || !lower_hex(id) || !lower_hex(secret) {
        return None;
    }
    Some(Presented {
        environment,
        id,
        secret,
    })
}

/// Keys the secret hashes. The key lives in a 0600 file, not in the database.
pub struct SecretHasher {
    key: Zeroizing<[u8; 32]>,
}

impl SecretHasher {
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        SecretHasher { key }
    }

    fn hash(&self, secret: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_slice())
            .expect("HMAC takes any key length");
        mac.update(b"shardsign-api-key-v1\0");
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `presented` matches a secret still accepted at `now_ms`. Every stored hash is
    /// compared, in constant time each.
    pub fn matches(&self, presented: &Presented<'_>, secrets: &[SecretHash], now_ms: i64) -> Match {
        let hash = self.hash(presented.secret);
        let mut current = false;
        let mut expired_grace = false;
        for stored in secrets {
            let equal: bool = hash.ct_eq(&stored.hash).into();
            match stored.valid_until_ms {
                None => current |= equal,
                Some(until) if until > now_ms => current |= equal,
                Some(_) => expired_grace |= equal,
            }
        }
        if current {
            Match::Valid
        } else if expired_grace {
            Match::RotatedOut
        } else {
            Match::None
        }
    }

    /// A new key for `id` in `environment`, and the hash to store.
    pub fn issue(&self, environment: &str, id: &str) -> (IssuedSecret, [u8; 32]) {
        let secret = Zeroizing::new(hex::encode(rand::random::<[u8; 32]>()));
        let hash = self.hash(&secret);
        let token = Zeroizing::new(format!("ss_{environment}_{id}_{}", secret.as_str()));
        (IssuedSecret(token), hash)
    }
}

/// The outcome of comparing a presented secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Valid,
    /// It was a secret of this key, replaced by a rotation whose grace period is over.
    RotatedOut,
    None,
}

/// A fresh public id.
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// Refuses a secret file that its group or others may read or write (as ssh does with keys).
pub fn refuse_shared_secret_file(
    setting: &'static str,
    path: &std::path::Path,
) -> Result<(), CoordError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| CoordError::config(setting, format!("cannot read {}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(CoordError::config(
            setting,
            format!(
                "{} is open to its group or others (mode {:o}); make it private: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Reads the hashing key, creating it (0600) on first start.
pub fn load_or_create_hmac_key(path: &std::path::Path) -> Result<Zeroizing<[u8; 32]>, CoordError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let setting = "auth.api_key_hmac_key_file";
    if !path.exists() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CoordError::config(setting, e.to_string()))?;
        }
        let key = Zeroizing::new(hex::encode(rand::random::<[u8; 32]>()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                CoordError::config(setting, format!("cannot create {}: {e}", path.display()))
            })?;
        file.write_all(key.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| {
                CoordError::config(setting, format!("cannot write {}: {e}", path.display()))
            })?;
        tracing::info!(path = %path.display(), "created the API-key hashing key");
    }
    refuse_shared_secret_file(setting, path)?;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        CoordError::config(setting, format!("cannot read {}: {e}", path.display()))
    })?);
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), key.as_mut_slice())
        .map_err(|_| CoordError::config(setting, "expected 64 hex digits"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashing_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hmac.key");
        let key = load_or_create_hmac_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "created private");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = load_or_create_hmac_key(&path).unwrap_err().to_string();
        assert!(
            error.contains("mode 640") && error.contains("chmod 600"),
            "{error}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(*load_or_create_hmac_key(&path).unwrap(), *key);
    }

    #[test]
    fn issued_keys_parse_and_match_only_their_hash() {
        let hasher = SecretHasher::new(Zeroizing::new([7; 32]));
        let (issued, hash) = hasher.issue("test", "0123456789abcdef");
        assert!(issued.0.starts_with("ss_test_0123456789abcdef_"));
        assert_eq!(issued.0.len(), API_KEY_LEN);
        let presented = parse(&issued.0).unwrap();
        assert_eq!(
            (presented.environment, presented.id),
            ("test", "0123456789abcdef")
        );
        let current = [SecretHash {
            hash,
            valid_until_ms: None,
        }];
        assert_eq!(hasher.matches(&presented, &current, 0), Match::Valid);
        let graced = [SecretHash {
            hash,
            valid_until_ms: Some(100),
        }];
        assert_eq!(hasher.matches(&presented, &graced, 99), Match::Valid);
        assert_eq!(hasher.matches(&presented, &graced, 100), Match::RotatedOut);
        let other = SecretHasher::new(Zeroizing::new([8; 32]));
        assert_eq!(other.matches(&presented, &current, 0), Match::None);
        assert!(format!("{issued:?}").contains("***"));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let good = format!("ss_live_{}_{}", "a".repeat(16), "b".repeat(64));
        assert!(parse(&good).is_some());
        for bad in [
            good.replace("ss_live", "ss_prod"),
            good.replace("ss_", "xx_"),
            good.to_uppercase(),
            good[..good.len() - 1].to_string(),
            format!("{good}0"),
            good.replacen('b', "g", 1),
            "é".repeat(API_KEY_LEN / 2 + 1)[..]
                .chars()
                .take(API_KEY_LEN / 2)
                .collect(),
        ] {
            assert!(parse(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn scopes_parse_and_admin_includes_read() {
        let scopes = Scopes::parse(&["admin".into()]).unwrap();
        assert!(
            scopes.allows(Scope::Read)
                && scopes.allows(Scope::Admin)
                && !scopes.allows(Scope::Sign)
        );
        assert!(Scopes::parse(&[]).is_err());
        assert!(Scopes::parse(&["root".into()]).is_err());
        assert_eq!(
            Scopes::from_column("read,sign"),
            Scopes {
                read: true,
                sign: true,
                admin: false,
                approve: false,
            }
        );
        // Approvers reach the approvals service and nothing else; admin includes it.
        let approve = Scopes::parse(&["approve".into()]).unwrap();
        assert!(approve.allows(Scope::Approve) && !approve.allows(Scope::Read));
        assert!(!approve.allows(Scope::Sign) && !approve.allows(Scope::Admin));
        assert!(scopes.allows(Scope::Approve));
        assert_eq!(Scopes::from_column("approve"), approve);
    }
}
