//! Our age encryption against the reference tool: files we write decrypt with Debian's `age`
//! command (`scripts/setup-system.sh` installs it) to exactly what we encrypted, for an empty
//! secret, a 32-byte key and a payload of several 64 KiB chunks; and what the tool encrypts
//! decrypts with ours.

use std::process::Command;

use shardsign_seal::{AgeIdentity, AgeRecipient, age_decrypt, age_encrypt};

#[test]
fn what_we_encrypt_decrypts_with_the_age_cli() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity.txt");
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(&identity)
        .output()
        .expect("age-keygen (install Debian's age: scripts/setup-system.sh)");
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&identity)
        .output()
        .unwrap();
    let recipient = AgeRecipient::parse(&String::from_utf8(public.stdout).unwrap()).unwrap();

    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for plaintext in [Vec::new(), vec![0x5a; 32], big] {
        let file = dir.path().join("secret.age");
        std::fs::write(&file, age_encrypt(&recipient, &plaintext)).unwrap();
        let decrypted = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&identity)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            decrypted.status.success(),
            "age -d failed for {} bytes: {}",
            plaintext.len(),
            String::from_utf8_lossy(&decrypted.stderr)
        );
        assert_eq!(decrypted.stdout, plaintext);

        let from_cli = dir.path().join("from-cli.age");
        let recipient_text = String::from_utf8(
            Command::new("age-keygen")
                .arg("-y")
                .arg(&identity)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, &plaintext).unwrap();
        let encrypted = Command::new("age")
            .args(["-r", recipient_text.trim(), "-o"])
            .arg(&from_cli)
            .arg(&plain)
            .output()
            .unwrap();
        assert!(
            encrypted.status.success(),
            "{}",
            String::from_utf8_lossy(&encrypted.stderr)
        );
        let ours = AgeIdentity::parse(&std::fs::read_to_string(&identity).unwrap()).unwrap();
        let opened = age_decrypt(&ours, &std::fs::read(&from_cli).unwrap()).unwrap();
        assert_eq!(opened.as_slice(), plaintext.as_slice());
    }
}
