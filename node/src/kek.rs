//! The key-encryption key (KEK): derived from an operator passphrase with Argon2id (salt and
//! cost stored with the store), or read from a 32-byte key file. It only wraps the store's data
//! key; nothing else is encrypted under it directly.

use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use shardsign_provision::KekFile;

use crate::error::NodeError;

/// Shortest passphrase accepted.
pub const MIN_PASSPHRASE_LEN: usize = 12;
/// Longest passphrase or key file read.
const MAX_SECRET_FILE_LEN: u64 = 4096;

/// Where the KEK comes from. Secrets are wiped on drop and never printed.
pub enum KekSource {
    Passphrase(Zeroizing<String>),
    KeyFile(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for KekSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KekSource::Passphrase(_) => "KekSource::Passphrase(***)",
            KekSource::KeyFile(_) => "KekSource::KeyFile(***)",
        })
    }
}

fn read_secret_file(setting: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>, NodeError> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| NodeError::config(setting, format!("cannot read {}: {e}", path.display())))?;
    if metadata.len() > MAX_SECRET_FILE_LEN {
        return Err(NodeError::config(
            setting,
            format!(
                "{} is larger than {MAX_SECRET_FILE_LEN} bytes",
                path.display()
            ),
        ));
    }
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| NodeError::config(setting, format!("cannot read {}: {e}", path.display())))
}

fn checked_passphrase(setting: &str, text: Zeroizing<String>) -> Result<KekSource, NodeError> {
    let trimmed = Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_string());
    if trimmed.chars().count() < MIN_PASSPHRASE_LEN {
        return Err(NodeError::config(
            setting,
            format!("the passphrase must be at least {MIN_PASSPHRASE_LEN} characters"),
        ));
    }
    Ok(KekSource::Passphrase(trimmed))
}

impl KekSource {
    /// A passphrase from the environment variable `var`.
    pub fn passphrase_env(var: &str) -> Result<Self, NodeError> {
        let setting = format!("kek.passphrase_env ({var})");
        let value = std::env::var(var)
            .map_err(|_| NodeError::config(&setting, "the variable is not set or not UTF-8"))?;
        checked_passphrase(&setting, Zeroizing::new(value))
    }

    /// A passphrase from the first line of a file.
    pub fn passphrase_file(path: &Path) -> Result<Self, NodeError> {
        let bytes = read_secret_file("kek.passphrase_file", path)?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| NodeError::config("kek.passphrase_file", "the file is not UTF-8"))?;
        checked_passphrase("kek.passphrase_file", Zeroizing::new(text))
    }

    /// 32 bytes from a file: raw, or 64 hex digits (a trailing newline is allowed).
    pub fn key_file(path: &Path) -> Result<Self, NodeError> {
        let bytes = read_secret_file("kek.key_file", path)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() == 32 {
            key.copy_from_slice(&bytes);
        } else {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| {
                    NodeError::config("kek.key_file", "expected 32 raw bytes or 64 hex digits")
                })?
                .trim_end_matches(['\r', '\n']);
            hex::decode_to_slice(text, key.as_mut_slice()).map_err(|_| {
                NodeError::config("kek.key_file", "expected 32 raw bytes or 64 hex digits")
            })?;
        }
        Ok(KekSource::KeyFile(key))
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            KekSource::Passphrase(_) => "a passphrase",
            KekSource::KeyFile(_) => "a key file",
        }
    }
}

/// How the KEK is derived; stored in the clear beside the wrapped data key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KdfParams {
    Argon2id {
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        salt: String,
    },
    KeyFile,
}

impl KdfParams {
    /// Fresh parameters for `source`: Argon2id at 64 MiB, 3 passes (OWASP's recommendation).
    pub(crate) fn for_source(source: &KekSource) -> Self {
        match source {
            KekSource::Passphrase(_) => KdfParams::Argon2id {
                memory_kib: 64 * 1024,
                iterations: 3,
                parallelism: 1,
                salt: hex::encode(rand::random::<[u8; 16]>()),
            },
            KekSource::KeyFile(_) => KdfParams::KeyFile,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            KdfParams::Argon2id { .. } => "a passphrase",
            KdfParams::KeyFile => "a key file",
        }
    }

    /// Derives the KEK.
    pub(crate) fn derive(&self, source: &KekSource) -> Result<Zeroizing<[u8; 32]>, NodeError> {
        match (self, source) {
            (
                KdfParams::Argon2id {
                    memory_kib,
                    iterations,
                    parallelism,
                    salt,
                },
                KekSource::Passphrase(passphrase),
            ) => {
                check_argon2_bounds(*memory_kib, *iterations, *parallelism)?;
                let salt = hex::decode(salt)
                    .map_err(|_| NodeError::Corrupt("KDF salt is not hex".into()))?;
                if !(16..=64).contains(&salt.len()) {
                    return Err(NodeError::Corrupt("KDF salt is not 16 to 64 bytes".into()));
                }
                let params = Params::new(*memory_kib, *iterations, *parallelism, Some(32))
                    .map_err(|_| NodeError::Corrupt("KDF parameters are invalid".into()))?;
                let mut kek = Zeroizing::new([0u8; 32]);
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .hash_password_into(passphrase.as_bytes(), &salt, kek.as_mut_slice())
                    .map_err(|_| NodeError::Corrupt("KDF failed".into()))?;
                Ok(kek)
            }
            (KdfParams::KeyFile, KekSource::KeyFile(key)) => Ok(Zeroizing::new(**key)),
            (params, source) => Err(NodeError::KekKindMismatch {
                expected: params.kind(),
                given: source.kind(),
            }),
        }
    }
}

/// The Argon2 parameters a store may name. They are read from the store before anything is
/// authenticated, so a tampered `memory_kib` must not make the node allocate without bound;
/// within these bounds a tampered value only derives a wrong KEK, which then fails to unwrap the
/// data key (the AEAD authenticates the parameters in effect).
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const MIN_MEMORY_KIB: u32 = 8 * 1024;
const MAX_ITERATIONS: u32 = 16;
const MAX_PARALLELISM: u32 = 16;

fn check_argon2_bounds(
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
) -> Result<(), NodeError> {
    if !(MIN_MEMORY_KIB..=MAX_MEMORY_KIB).contains(&memory_kib)
        || !(1..=MAX_ITERATIONS).contains(&iterations)
        || !(1..=MAX_PARALLELISM).contains(&parallelism)
    {
        return Err(NodeError::Corrupt(format!(
            "the store's KDF parameters (memory {memory_kib} KiB, {iterations} passes, parallelism {parallelism}) are outside 8 MiB-1 GiB, 1-{MAX_ITERATIONS}, 1-{MAX_PARALLELISM}: the store was tampered with"
        )));
    }
    Ok(())
}

impl KekSource {
    /// Reads the one source the config file names; zero or several is an error naming the
    /// settings.
    pub fn load(config: &KekFile) -> Result<KekSource, NodeError> {
        match (
            &config.passphrase_env,
            &config.passphrase_file,
            &config.key_file,
        ) {
            (Some(var), None, None) => KekSource::passphrase_env(var),
            (None, Some(path), None) => KekSource::passphrase_file(path),
            (None, None, Some(path)) => KekSource::key_file(path),
            _ => Err(NodeError::config(
                "kek",
                "set exactly one of passphrase_env, passphrase_file or key_file",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argon2(memory_kib: u32, iterations: u32, salt: &str) -> KdfParams {
        KdfParams::Argon2id {
            memory_kib,
            iterations,
            parallelism: 1,
            salt: salt.into(),
        }
    }

    #[test]
    fn tampered_kdf_parameters_are_refused_before_any_work() {
        let passphrase = KekSource::Passphrase(Zeroizing::new("correct horse".into()));
        let salt = hex::encode([1u8; 16]);
        // 4 TiB of memory would be allocated if the bound were not checked first.
        for params in [
            argon2(u32::MAX, 3, &salt),
            argon2(1024, 3, &salt),
            argon2(64 * 1024, 0, &salt),
            argon2(64 * 1024, 1_000_000, &salt),
            argon2(8 * 1024, 1, "00"),
        ] {
            let error = params.derive(&passphrase).unwrap_err();
            assert!(
                matches!(error, NodeError::Corrupt(_)),
                "{params:?}: {error}"
            );
        }
        assert!(argon2(8 * 1024, 1, &salt).derive(&passphrase).is_ok());
    }
}
