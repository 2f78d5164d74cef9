//! `shardsign-devcert <dir>`: writes a development CA and every certificate a local cluster needs:
//! `ca.pem`, `node-{1,2,3}.{pem,key}` (server, for localhost/127.0.0.1 and `node-N`),
//! `coordinator-client.{pem,key}` (the client the nodes admit; its SHA-256 is printed and written
//! to `coordinator-client.sha256`), `coordinator-2-client.{pem,key,sha256}` (a second
//! coordinator's, for coordinators sharing a PostgreSQL registry), `api.{pem,key}` (the public
//! API). Keys are written 0600.
//! For development only: production operators bring their own PKI.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use shardsign_devcert::{DevCa, Usage};

fn write(dir: &Path, name: &str, contents: &str, mode: u32) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dir.join(name))?;
    file.write_all(contents.as_bytes())
}

fn run(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if dir.join("ca.pem").exists() {
        return Err(format!(
            "{} already holds certificates; refusing to overwrite them",
            dir.display()
        )
        .into());
    }
    std::fs::create_dir_all(dir)?;
    let ca = DevCa::generate("shardsign development CA")?;
    write(dir, "ca.pem", ca.cert_pem(), 0o644)?;
    for id in 1..=3 {
        let name = format!("node-{id}");
        let cert = ca.issue(&name, &["localhost", "127.0.0.1", &name], Usage::Server)?;
        write(dir, &format!("{name}.pem"), &cert.cert_pem, 0o644)?;
        write(dir, &format!("{name}.key"), &cert.key_pem, 0o600)?;
    }
    let client = ca.issue("coordinator", &["coordinator"], Usage::Client)?;
    write(dir, "coordinator-client.pem", &client.cert_pem, 0o644)?;
    write(dir, "coordinator-client.key", &client.key_pem, 0o600)?;
    write(dir, "coordinator-client.sha256", &client.fingerprint, 0o644)?;
    let second = ca.issue("coordinator-2", &["coordinator-2"], Usage::Client)?;
    write(dir, "coordinator-2-client.pem", &second.cert_pem, 0o644)?;
    write(dir, "coordinator-2-client.key", &second.key_pem, 0o600)?;
    write(
        dir,
        "coordinator-2-client.sha256",
        &second.fingerprint,
        0o644,
    )?;
    let api = ca.issue(
        "shardsign-api",
        &["localhost", "127.0.0.1", "coordinator", "coordinator-2"],
        Usage::Server,
    )?;
    write(dir, "api.pem", &api.cert_pem, 0o644)?;
    write(dir, "api.key", &api.key_pem, 0o600)?;
    println!("certificates written to {}", dir.display());
    println!(
        "coordinator client certificate sha256: {}",
        client.fingerprint
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: shardsign-devcert <directory>");
        return std::process::ExitCode::from(2);
    };
    match run(Path::new(dir)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shardsign-devcert: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
