//! Network-capture leak test (issue #17): tshark records every TCP packet on loopback from before
//! the cluster starts, through a key ceremony, 20 signatures and an API-key rotation. Every TCP
//! stream of the cluster's ports (coordinator API, three nodes) must start with a TLS handshake
//! record, and no API key, passphrase, share byte or identity key may appear anywhere in the
//! capture, in raw or hex form.
//!
//! Needs tshark (Debian's package; `scripts/setup-system.sh` installs it) and the right to capture
//! on `lo` (root, as in CI).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use shardsign_node::kek::KekSource;
use shardsign_node::store::Store;
use shardsign_proto::v1::{CreateApiKeyRequest, RotateApiKeyRequest};
use shardsign_tests::cluster::KekKind;
use shardsign_tests::full::{Cluster, one_wei_transfer};
use shardsign_tests::leak::{contains, forms};
use zeroize::Zeroizing;

fn port(address: &str) -> u16 {
    address.rsplit(':').next().unwrap().parse().expect("port")
}

struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    /// Starts tshark on every TCP packet of `lo`; returns once it says it is capturing.
    fn start(dir: &std::path::Path) -> Capture {
        let file = dir.join("capture.pcapng");
        let mut child = Command::new("tshark")
            .args(["-i", "lo", "-f", "tcp", "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tshark (install it: scripts/setup-system.sh)");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines
                .next()
                .expect("tshark exited before capturing")
                .expect("tshark's stderr");
            if line.contains("Capturing on") {
                break;
            }
        }
        // Keep draining stderr so tshark never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Capture { child, file }
    }

    /// Stops tshark (SIGINT: it flushes and closes the file) and returns the capture.
    fn stop(mut self) -> (std::path::PathBuf, Vec<u8>) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("tshark exits");
        let bytes = std::fs::read(&self.file).expect("capture file");
        (self.file.clone(), bytes)
    }
}

/// The first payload bytes of every TCP stream with payload to or from `ports`, as hex, by
/// stream number.
fn first_payloads(file: &std::path::Path, ports: &[u16]) -> BTreeMap<u64, String> {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let filter = format!("tcp.len > 0 && tcp.port in {{{}}}", ports.join(", "));
    let output = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args([
            "-Y",
            &filter,
            "-T",
            "fields",
            "-e",
            "tcp.stream",
            "-e",
            "tcp.payload",
        ])
        .output()
        .expect("tshark -r");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut first = BTreeMap::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let mut fields = line.split('\t');
        let stream: u64 = fields.next().unwrap().parse().expect("stream");
        let payload = fields.next().unwrap_or_default().to_string();
        first.entry(stream).or_insert(payload);
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_of_the_clusters_traffic_holds_only_tls_and_no_secret() {
    // From before the cluster starts, so that every connection is seen from its first byte.
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(dir.path());
    let mut cluster = Cluster::start_with(KekKind::Passphrase);
    let mut ports = vec![port(&cluster.coordinator.address)];
    ports.extend(cluster.nodes.nodes.iter().map(|n| port(&n.address)));

    // The ceremony, 20 signatures, an API key created and rotated.
    let key = cluster.ceremony("capture", &[1]).await;
    cluster.allow_everything(&key).await;
    let mut signer = cluster.signer();
    for nonce in 0..20 {
        signer
            .sign_transaction(one_wei_transfer(&key.key_id, nonce))
            .await
            .expect("signs");
    }
    let created = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "capture agent".into(),
            scopes: vec!["read".into()],
            all_keys: true,
            ..Default::default()
        })
        .await;
    let rotated = cluster
        .admin()
        .rotate_api_key(RotateApiKeyRequest {
            id: created.info.as_ref().unwrap().id.clone(),
            grace_seconds: Some(0),
        })
        .await
        .expect("rotate")
        .into_inner();
    let (file, pcap) = capture.stop();

    // Every stream is TLS: its first payload is a TLS handshake record (0x16 0x03 ..).
    let streams = first_payloads(&file, &ports);
    assert!(
        streams.len() > ports.len(),
        "the capture holds the API's and every node's streams: {}",
        streams.len()
    );
    for (stream, payload) in &streams {
        assert!(
            payload.starts_with("1603"),
            "stream {stream} does not start with TLS: {payload:.40}"
        );
    }
    for plain in [
        &b"PRI * HTTP/2.0"[..],
        b"application/grpc",
        b"authorization",
        b"shardsign.node.v1",
    ] {
        assert!(
            !contains(&pcap, plain),
            "plaintext {:?} in the capture",
            String::from_utf8_lossy(plain)
        );
    }

    // No secret anywhere in the capture.
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, token) in [
        ("bootstrap token", cluster.bootstrap_token.clone()),
        ("admin API key", cluster.admin_token.clone()),
        ("signer API key", cluster.signer_token.clone()),
        ("created API key", created.api_key.clone()),
        ("rotated API key", rotated.api_key.clone()),
    ] {
        assert!(!token.is_empty(), "{name}");
        needles.push((name.into(), token.into_bytes()));
    }
    for id in 1..=3u8 {
        cluster.nodes.node(id).stop();
        let node = cluster.nodes.node(id);
        let passphrase = node.passphrase.clone();
        needles.push((
            format!("node {id} passphrase"),
            passphrase.clone().into_bytes(),
        ));
        let (store, identity) = Store::open(
            &node.data_dir(),
            &KekSource::Passphrase(Zeroizing::new(passphrase)),
        )
        .unwrap();
        let share = store.load_key(&key.key_id).unwrap().share;
        let share_bytes = share.to_bytes();
        let party: dkls23::secp256k1::Party = postcard::from_bytes(&share_bytes[1..]).unwrap();
        let scalar: [u8; 32] = party.poly_point.to_bytes().into();
        assert!(contains(&share_bytes, &scalar), "the needle is real");
        for form in forms(&scalar) {
            needles.push((format!("node {id} share scalar"), form));
        }
        let identity_bytes = identity.to_bytes();
        for form in forms(&identity_bytes[..32])
            .into_iter()
            .chain(forms(&identity_bytes[32..]))
        {
            needles.push((format!("node {id} identity key"), form));
        }
        // Windows deep inside the share (multiplication and OT state).
        for offset in
            (share_bytes.len() / 4..share_bytes.len() * 3 / 4).step_by(share_bytes.len() / 16)
        {
            needles.push((
                format!("node {id} share bytes at {offset}"),
                share_bytes[offset..offset + 32].to_vec(),
            ));
        }
    }
    for (name, needle) in &needles {
        assert!(!contains(&pcap, needle), "{name} found in the capture");
    }
    println!(
        "capture: {} bytes, {} TCP streams, all TLS; {} secret forms searched, none found",
        pcap.len(),
        streams.len(),
        needles.len()
    );
}
