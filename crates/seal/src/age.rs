//! Encryption to an `age` X25519 recipient (age-encryption.org/v1), just enough to wrap a small
//! secret for an operator's offline recovery key: the file decrypts with the `age` command-line
//! tool (`age -d -i key.txt`). Our own few lines instead of the `age` crate, whose dependency
//! tree (localisation, armor, plugins, scrypt) is far larger than this one use.
//!
//! Format: a text header (version line, one `-> X25519` stanza holding the file key wrapped to
//! the recipient, `---` and an HMAC of the header), then a 16-byte nonce and the payload in
//! ChaCha20-Poly1305 STREAM chunks of 64 KiB.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core_06::{OsRng, RngCore};
use sha2::Sha256;
use x25519_dalek::{EphemeralSecret, PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::SealError;

const VERSION_LINE: &str = "age-encryption.org/v1";
const X25519_INFO: &[u8] = b"age-encryption.org/v1/X25519";
const CHUNK: usize = 64 * 1024;

/// An `age` X25519 recipient (`age1...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeRecipient(PublicKey);

impl AgeRecipient {
    /// Parses the Bech32 `age1...` form `age-keygen` prints.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let bad = || SealError::Malformed("not an age X25519 recipient (age1...)");
        let (hrp, data) = bech32::decode(text.trim()).map_err(|_| bad())?;
        if hrp.as_str() != "age" {
            return Err(bad());
        }
        let key: [u8; 32] = data.try_into().map_err(|_| bad())?;
        Ok(AgeRecipient(PublicKey::from(key)))
    }
}

/// An `age` X25519 identity (`AGE-SECRET-KEY-1...`), as `age-keygen` writes it. Wiped on drop
/// (x25519-dalek's `zeroize` feature), never printed.
pub struct AgeIdentity(StaticSecret);

impl std::fmt::Debug for AgeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgeIdentity(***)")
    }
}

impl AgeIdentity {
    /// Reads the first `AGE-SECRET-KEY-1...` line of an identity file (comments skipped).
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let bad =
            || SealError::Malformed("no age X25519 identity (AGE-SECRET-KEY-1...) in the file");
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .ok_or_else(bad)?;
        let (hrp, data) = bech32::decode(line).map_err(|_| bad())?;
        if !hrp.as_str().eq_ignore_ascii_case("age-secret-key-") {
            return Err(bad());
        }
        let key: Zeroizing<[u8; 32]> = Zeroizing::new(data.try_into().map_err(|_| bad())?);
        Ok(AgeIdentity(StaticSecret::from(*key)))
    }

    pub fn recipient(&self) -> AgeRecipient {
        AgeRecipient(PublicKey::from(&self.0))
    }
}

/// Most bytes `age_decrypt` reads: it opens small wrapped secrets, not archives.
pub const MAX_AGE_FILE_LEN: usize = 1024 * 1024;

/// Decrypts an age v1 file with one X25519 stanza for `identity` (other stanza types are
/// skipped); checks the header MAC and every payload chunk.
pub fn age_decrypt(identity: &AgeIdentity, file: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let malformed = SealError::Malformed;
    if file.len() > MAX_AGE_FILE_LEN {
        return Err(malformed("the age file is over 1 MiB"));
    }
    let end = file
        .windows(4)
        .position(|w| w == b"\n---")
        .ok_or(malformed("no age header end (---)"))?
        + 4;
    let mac_end = end
        + file[end..]
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(malformed("the age header's MAC line does not end"))?;
    let header =
        std::str::from_utf8(&file[..end]).map_err(|_| malformed("the age header is not text"))?;
    let mac_text = std::str::from_utf8(&file[end..mac_end])
        .ok()
        .and_then(|t| t.strip_prefix(' '))
        .ok_or(malformed("the age header's MAC line is malformed"))?;
    let mut lines = header.lines();
    if lines.next() != Some(VERSION_LINE) {
        return Err(malformed("not an age v1 file"));
    }
    let ours = identity.recipient();
    let mut file_key: Option<Zeroizing<Vec<u8>>> = None;
    let mut line = lines.next();
    while let Some(stanza) = line.and_then(|l| l.strip_prefix("-> ")) {
        let mut body = String::new();
        loop {
            let next = lines
                .next()
                .ok_or(malformed("an age stanza does not end"))?;
            body.push_str(next);
            if next.len() < 64 {
                break;
            }
        }
        let args: Vec<&str> = stanza.split(' ').collect();
        if file_key.is_none() && args.len() == 2 && args[0] == "X25519" {
            let share: [u8; 32] = STANDARD_NO_PAD
                .decode(args[1])
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(malformed("an X25519 stanza's share is not 32 bytes"))?;
            let share = PublicKey::from(share);
            let shared = identity.0.diffie_hellman(&share);
            let mut salt = [0u8; 64];
            salt[..32].copy_from_slice(share.as_bytes());
            salt[32..].copy_from_slice(ours.0.as_bytes());
            let wrap_key = hkdf(shared.as_bytes(), &salt, X25519_INFO);
            let wrapped = STANDARD_NO_PAD
                .decode(&body)
                .map_err(|_| malformed("an X25519 stanza's body is not base64"))?;
            file_key = ChaCha20Poly1305::new(Key::from_slice(wrap_key.as_slice()))
                .decrypt(Nonce::from_slice(&[0u8; 12]), wrapped.as_slice())
                .ok()
                .filter(|k| k.len() == 16)
                .map(Zeroizing::new);
        }
        line = lines.next();
    }
    let file_key = file_key.ok_or(SealError::Unauthentic)?;
    let mac_key = hkdf(&file_key, &[], b"header");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key.as_slice())
        .expect("HMAC takes any key length");
    mac.update(header.as_bytes());
    let expected = STANDARD_NO_PAD
        .decode(mac_text)
        .map_err(|_| malformed("the age header's MAC is not base64"))?;
    mac.verify_slice(&expected)
        .map_err(|_| SealError::Unauthentic)?;

    let payload = &file[mac_end + 1..];
    if payload.len() < 16 + 16 {
        return Err(malformed("the age payload is truncated"));
    }
    let (nonce, mut rest) = payload.split_at(16);
    let payload_key = hkdf(&file_key, nonce, b"payload");
    let cipher = ChaCha20Poly1305::new(Key::from_slice(payload_key.as_slice()));
    let mut out = Zeroizing::new(Vec::with_capacity(rest.len()));
    let mut counter = 0u64;
    loop {
        let last = rest.len() <= CHUNK + 16;
        let (chunk, tail) = rest.split_at(if last { rest.len() } else { CHUNK + 16 });
        let mut chunk_nonce = [0u8; 12];
        chunk_nonce[3..11].copy_from_slice(&counter.to_be_bytes());
        chunk_nonce[11] = u8::from(last);
        let plain = cipher
            .decrypt(Nonce::from_slice(&chunk_nonce), chunk)
            .map_err(|_| SealError::Unauthentic)?;
        if last && plain.is_empty() && counter > 0 {
            return Err(malformed("an empty final age chunk after others"));
        }
        out.extend_from_slice(&plain);
        if last {
            return Ok(out);
        }
        rest = tail;
        counter += 1;
    }
}

fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out.as_mut_slice())
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    out
}

/// The stanza body (and any base64 in the format): no padding, lines of at most 64 columns, the
/// last one shorter than 64 (an empty line when the text fills its lines).
fn wrapped_base64(bytes: &[u8]) -> String {
    let text = STANDARD_NO_PAD.encode(bytes);
    let mut out = String::new();
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    if text.len().is_multiple_of(64) {
        out.push('\n');
    }
    out
}

/// Encrypts `plaintext` to `recipient` in the age v1 format.
pub fn age_encrypt(recipient: &AgeRecipient, plaintext: &[u8]) -> Vec<u8> {
    let mut file_key = Zeroizing::new([0u8; 16]);
    OsRng.fill_bytes(file_key.as_mut_slice());

    let ephemeral = EphemeralSecret::random_from_rng(OsRng);
    let ephemeral_share = PublicKey::from(&ephemeral);
    let shared = ephemeral.diffie_hellman(&recipient.0);
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral_share.as_bytes());
    salt[32..].copy_from_slice(recipient.0.as_bytes());
    let wrap_key = hkdf(shared.as_bytes(), &salt, X25519_INFO);
    let wrapped = ChaCha20Poly1305::new(Key::from_slice(wrap_key.as_slice()))
        .encrypt(Nonce::from_slice(&[0u8; 12]), file_key.as_slice())
        .expect("ChaCha20-Poly1305 encryption does not fail for in-memory buffers");

    let mut header = format!(
        "{VERSION_LINE}\n-> X25519 {}\n",
        STANDARD_NO_PAD.encode(ephemeral_share.as_bytes())
    );
    header.push_str(&wrapped_base64(&wrapped));
    header.push_str("---");
    let mac_key = hkdf(file_key.as_slice(), &[], b"header");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key.as_slice())
        .expect("HMAC takes any key length");
    mac.update(header.as_bytes());
    header.push(' ');
    header.push_str(&STANDARD_NO_PAD.encode(mac.finalize().into_bytes()));
    header.push('\n');

    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let payload_key = hkdf(file_key.as_slice(), &nonce, b"payload");
    let cipher = ChaCha20Poly1305::new(Key::from_slice(payload_key.as_slice()));
    let mut out = header.into_bytes();
    out.extend_from_slice(&nonce);
    let chunks: Vec<&[u8]> = if plaintext.is_empty() {
        vec![&[]]
    } else {
        plaintext.chunks(CHUNK).collect()
    };
    for (counter, chunk) in chunks.iter().enumerate() {
        let mut chunk_nonce = [0u8; 12];
        chunk_nonce[3..11].copy_from_slice(&(counter as u64).to_be_bytes());
        if counter + 1 == chunks.len() {
            chunk_nonce[11] = 1;
        }
        let sealed = cipher
            .encrypt(Nonce::from_slice(&chunk_nonce), *chunk)
            .expect("ChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        out.extend_from_slice(&sealed);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_parse_and_nothing_else_does() {
        // From age's own test vectors (the recipient of AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX).
        let recipient = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj";
        AgeRecipient::parse(recipient).unwrap();
        assert!(AgeRecipient::parse("age1notbech32").is_err());
        assert!(AgeRecipient::parse(&recipient.replace("age1", "agx1")).is_err());
    }

    // age's test identity and its recipient.
    const IDENTITY: &str =
        "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX";

    #[test]
    fn what_we_encrypt_we_decrypt_and_a_change_anywhere_is_refused() {
        let identity = AgeIdentity::parse(&format!("# created: now\n{IDENTITY}\n")).unwrap();
        assert_eq!(
            identity.recipient(),
            AgeRecipient::parse("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj")
                .unwrap()
        );
        let big: Vec<u8> = (0..(2 * CHUNK + 5)).map(|i| i as u8).collect();
        for plaintext in [Vec::new(), vec![9u8; 32], vec![1u8; CHUNK], big] {
            let file = age_encrypt(&identity.recipient(), &plaintext);
            assert_eq!(
                age_decrypt(&identity, &file).unwrap().as_slice(),
                plaintext.as_slice()
            );
        }
        let file = age_encrypt(&identity.recipient(), b"secret");
        for at in [30, file.len() - 1, file.len() - 20] {
            let mut tampered = file.clone();
            tampered[at] ^= 1;
            assert!(age_decrypt(&identity, &tampered).is_err(), "byte {at}");
        }
        let other = AgeIdentity(StaticSecret::from([3u8; 32]));
        assert!(matches!(
            age_decrypt(&other, &file),
            Err(SealError::Unauthentic)
        ));
        assert!(age_decrypt(&identity, &file[..file.len() - 1]).is_err());
        assert_eq!(format!("{identity:?}"), "AgeIdentity(***)");
    }

    #[test]
    fn the_header_has_the_age_layout_and_the_payload_its_size() {
        let recipient =
            AgeRecipient::parse("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj")
                .unwrap();
        let out = age_encrypt(&recipient, &[7u8; 32]);
        let text = String::from_utf8_lossy(&out);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(VERSION_LINE));
        assert!(lines.next().unwrap().starts_with("-> X25519 "));
        assert_eq!(lines.next().unwrap().len(), 43, "32 wrapped bytes");
        assert!(lines.next().unwrap().starts_with("--- "));
        let header_len = text.find("--- ").unwrap() + 4 + 43 + 1;
        assert_eq!(
            out.len(),
            header_len + 16 + 32 + 16,
            "nonce, one final chunk and its tag"
        );
        assert_eq!(
            wrapped_base64(&[0u8; 48]),
            format!("{}\n\n", "A".repeat(64))
        );
    }
}
