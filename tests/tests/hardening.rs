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
