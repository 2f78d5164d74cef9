//! Throw-away PostgreSQL databases for the tests of coordinators sharing a registry, on the
//! server `SHARDSIGN_TEST_POSTGRES` names (`scripts/postgres.sh start` starts one).

use shardsign_coordinator::registry::db::postgres::{Target, create_database};

pub const POSTGRES_ENV: &str = "SHARDSIGN_TEST_POSTGRES";

/// The test server's URL; a test that needs it fails (never skips) without it.
pub fn server_url() -> String {
    std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_ENV} is not set: start a throw-away server with `eval \"$(bash scripts/postgres.sh start)\"`"
        )
    })
}

/// A new, empty database on the test server; its URL.
pub fn fresh_database_url() -> String {
    let server = server_url();
    let name = format!(
        "shardsign_ha_{}",
        crate::cluster::hex_random()[..12].to_lowercase()
    );
    let target = Target::parse(&server, None).expect("the test server's URL");
    create_database(&target, &name).expect("a throw-away database");
    let (base, _) = server.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}
