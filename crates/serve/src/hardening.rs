//! Process hardening at start, for the node and the coordinator alike: no core dumps (they would
//! contain key shares, the API-key hashing key, secrets in flight), no ptrace attach by other
//! processes of the same user, and files created private to the service's user (the node's
//! store, the coordinator's registry and its WAL, ready files).

/// What could be applied; logged at start.
#[derive(Debug, Clone, Copy)]
pub struct Hardening {
    pub core_dumps_disabled: bool,
    pub ptrace_blocked: bool,
}

/// Applies the hardening; failures are reported, not fatal (some sandboxes forbid them).
pub fn harden_process() -> Hardening {
    // SAFETY: plain libc calls with valid arguments and no pointers kept.
    let core_dumps_disabled = unsafe {
        let limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &limit) == 0
    };
    // PR_SET_DUMPABLE 0 also forbids ptrace attach by unprivileged processes.
    let ptrace_blocked = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 };
    // Files the service creates (database, WAL, ready file) are readable by its user only.
    unsafe {
        libc::umask(0o077);
    }
    Hardening {
        core_dumps_disabled,
        ptrace_blocked,
    }
}
