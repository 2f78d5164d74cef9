//! A development certificate authority: the CA, server certificates for nodes and the
//! coordinator, and client certificates for the coordinator and clients. Used by the tests now
//! and by the operator CLI's local cluster later; production operators bring their own PKI.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error)]
#[error("certificate generation failed: {0}")]
pub struct DevCertError(#[from] rcgen::Error);

/// What a certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// A certificate and its private key, PEM-encoded. The key is wiped when dropped.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
    /// Hex SHA-256 of the certificate's DER: what a peer pins.
    pub fingerprint: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("fingerprint", &self.fingerprint)
            .field("key_pem", &"***")
            .finish()
    }
}

/// A development CA held in memory.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("key", &"***")
            .finish_non_exhaustive()
    }
}

/// Hex SHA-256 of a certificate's DER encoding.
pub fn fingerprint_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

impl DevCa {
    pub fn generate(name: &str) -> Result<Self, DevCertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        Ok(DevCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            key_pem,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, for tooling that must issue more certificates later.
    pub fn key_pem(&self) -> &Zeroizing<String> {
        &self.key_pem
    }

    /// Issues a certificate for `common_name`, valid for `names` (DNS names or IP addresses).
    pub fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        usage: Usage,
    ) -> Result<Issued, DevCertError> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            fingerprint: fingerprint_der(cert.der()),
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_server_and_client_certificates() {
        let ca = DevCa::generate("shardsign dev CA").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let server = ca
            .issue("node-1", &["localhost", "127.0.0.1"], Usage::Server)
            .unwrap();
        let client = ca
            .issue("coordinator", &["coordinator"], Usage::Client)
            .unwrap();
        assert_ne!(server.fingerprint, client.fingerprint);
        assert_eq!(server.fingerprint.len(), 64);
        assert!(!format!("{server:?}").contains("PRIVATE KEY"));
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }
}
