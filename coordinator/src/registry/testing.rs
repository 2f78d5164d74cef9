//! Registries for tests, on both backends: every registry test runs on SQLite and on
//! PostgreSQL, so the two cannot drift apart.

use std::sync::atomic::{AtomicU32, Ordering};

use super::Registry;
use super::db::postgres::{Target, create_database};

/// The environment variable naming a PostgreSQL server the tests may create databases on
/// (`scripts/postgres.sh start` starts a throw-away one and prints it).
pub const POSTGRES_ENV: &str = "SHARDSIGN_TEST_POSTGRES";

/// A registry and what keeps it alive.
pub struct TestRegistry {
    pub registry: Registry,
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for TestRegistry {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        &self.registry
    }
}

/// The test server, or a panic that says how to start one (a test that needs PostgreSQL fails
/// without it; it is never skipped).
pub fn postgres_server() -> Target {
    let url = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_ENV} is not set: the registry tests run on PostgreSQL too. Start a \
             throw-away server with `eval \"$(bash scripts/postgres.sh start)\"`"
        )
    });
    Target::parse(&url, None).expect("the test server's URL")
}

/// A fresh, empty database on the test server.
pub fn fresh_postgres_database() -> Target {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "shardsign_t{}_{}_{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed),
        hex::encode(rand::random::<[u8; 4]>())
    );
    create_database(&postgres_server(), &name).expect("a throw-away database")
}

pub fn sqlite() -> TestRegistry {
    let dir = tempfile::tempdir().unwrap();
    TestRegistry {
        registry: Registry::open(&dir.path().join("r.db")).unwrap(),
        backend: "sqlite",
        _dir: Some(dir),
    }
}

pub fn postgres() -> TestRegistry {
    TestRegistry {
        registry: Registry::connect(fresh_postgres_database()).unwrap(),
        backend: "postgres",
        _dir: None,
    }
}

/// A fresh registry on each backend.
pub fn each_backend() -> [TestRegistry; 2] {
    [sqlite(), postgres()]
}
