//! What another process on the host can get from a running cluster: no core dump of any service
//! (the kernel's core-size limit is 0 for the coordinator and every node), and the coordinator's
//! registry (API-key hashes, audit log) and its API-key hashing key are private to its user.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use shardsign_tests::full::Cluster;

/// The "Max core file size" soft and hard limits of process `pid`.
fn core_limits(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core limit line");
    line.split_whitespace()
        .skip(4)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_service_dumps_core_and_the_coordinators_secrets_are_private() {
    let cluster = Cluster::start();
    let mut pids = vec![cluster.coordinator.pid().expect("coordinator running")];
    pids.extend(cluster.nodes.nodes.iter().filter_map(|n| n.pid()));
    assert_eq!(pids.len(), 4);
    for pid in pids {
        assert_eq!(core_limits(pid), "0 0", "process {pid}");
    }
    let dir = &cluster.coordinator.dir;
    assert_eq!(mode(&dir.join("coordinator.db")), 0o600);
    let hashing_key = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "key") && p.to_string_lossy().contains("hmac"))
        .expect("the API-key hashing key file");
    assert_eq!(mode(&hashing_key), 0o600);
}

/// A caller's strings reach the coordinator's log bounded and escaped: a refused request with a
/// 100 KB request id and a newline in its key id leaves no long line and no forged one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_strings_reach_the_log_bounded_and_escaped() {
    use shardsign_proto::v1::GetKeyRequest;
    let cluster = Cluster::start();
    let forged = "\n2026-01-01T00:00:00Z  INFO forged: key exported";
    let mut request = shardsign_tests::full::one_wei_transfer("key-1", 0);
    request.key_id = format!("k{forged}{}", "y".repeat(50_000));
    request.request_id = format!("r{forged}{}", "x".repeat(100_000));
    let status = cluster
        .signer()
        .sign_transaction(request)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().len() < 1024, "{}", status.message().len());
    let status = cluster
        .signer()
        .get_key(GetKeyRequest {
            key_id: format!("k{forged}{}", "z".repeat(50_000)),
        })
        .await
        .expect_err("refused");
    assert!(status.message().len() < 1024, "{}", status.message().len());
    let log = cluster.coordinator.log_text();
    assert!(log.contains("refused or failed"), "the refusal was logged");
    for line in log.lines() {
        assert!(line.len() < 4096, "a log line of {} bytes", line.len());
        assert!(
            !line.starts_with("2026-01-01T00:00:00Z"),
            "a forged line: {line}"
        );
    }
}
