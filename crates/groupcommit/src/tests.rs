use super::*;

fn database() -> (tempfile::TempDir, Arc<Mutex<Connection>>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = Connection::open(dir.path().join("db")).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE);",
    )
    .expect("schema");
    (dir, Arc::new(Mutex::new(conn)))
}

#[derive(Debug, PartialEq)]
enum TestError {
    Sql(String),
    Commit(String),
}

impl From<CommitFailed> for TestError {
    fn from(failed: CommitFailed) -> Self {
        TestError::Commit(failed.message)
    }
}

fn insert(value: &str) -> impl FnOnce(&Connection) -> Result<i64, TestError> + Send + 'static {
    let value = value.to_string();
    move |conn| {
        conn.execute("INSERT INTO t (v) VALUES (?1)", [&value])
            .map_err(|e| TestError::Sql(e.to_string()))?;
        Ok(conn.last_insert_rowid())
    }
}

fn count(conn: &Mutex<Connection>) -> i64 {
    conn.lock()
        .unwrap()
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn every_write_is_stored_before_its_ticket_answers() {
    let (_dir, conn) = database();
    let writer = GroupCommit::start(conn.clone(), "test-writer").unwrap();
    let tickets: Vec<_> = (0..500)
        .map(|i| writer.submit(insert(&format!("v{i}"))))
        .collect();
    for ticket in tickets {
        let id = ticket.wait_blocking().expect("stored");
        let stored: String = conn
            .lock()
            .unwrap()
            .query_row("SELECT v FROM t WHERE id = ?1", [id], |r| r.get(0))
            .expect("row is there once the ticket answered");
        assert!(stored.starts_with('v'));
    }
    assert_eq!(count(&conn), 500);
}

#[test]
fn a_failing_write_is_rolled_back_alone() {
    let (_dir, conn) = database();
    let writer = GroupCommit::start(conn.clone(), "test-writer").unwrap();
    let first = writer.submit(insert("same"));
    // Inserts a row, then fails: its own row must go, the others' stay.
    let failing = writer.submit(|conn: &Connection| -> Result<(), TestError> {
        conn.execute("INSERT INTO t (v) VALUES ('partial')", [])
            .map_err(|e| TestError::Sql(e.to_string()))?;
        conn.execute("INSERT INTO t (v) VALUES ('same')", [])
            .map_err(|e| TestError::Sql(e.to_string()))?;
        Ok(())
    });
    let last = writer.submit(insert("after"));
    assert!(first.wait_blocking().is_ok());
    assert!(matches!(failing.wait_blocking(), Err(TestError::Sql(_))));
    assert!(last.wait_blocking().is_ok());
    let values: Vec<String> = {
        let conn = conn.lock().unwrap();
        let mut statement = conn.prepare("SELECT v FROM t ORDER BY id").unwrap();
        statement
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(values, vec!["same".to_string(), "after".to_string()]);
}

#[test]
fn a_failed_commit_fails_every_write_of_the_batch() {
    let (_dir, conn) = database();
    // Holding the connection lock keeps the writer from starting until both jobs are queued.
    let guard = conn.lock().unwrap();
    let writer = GroupCommit::start(conn.clone(), "test-writer").unwrap();
    let ok = writer.submit(insert("fine"));
    // Deferred failure: a foreign-key style check that only the commit sees is hard to build in
    // SQLite, so the job ends the transaction itself, making the later COMMIT fail.
    let breaker = writer.submit(|conn: &Connection| -> Result<(), TestError> {
        conn.execute_batch("RELEASE job; COMMIT; BEGIN")
            .map_err(|e| TestError::Sql(e.to_string()))
    });
    drop(guard);
    let first = ok.wait_blocking();
    let second = breaker.wait_blocking();
    assert!(
        matches!(second, Err(TestError::Commit(_))),
        "the batch's failure reaches the job: {second:?}"
    );
    // The first job's fate is tied to the batch's: it heard the same failure.
    assert!(matches!(first, Err(TestError::Commit(_))), "{first:?}");
}

#[tokio::test]
async fn async_waiters_get_their_results() {
    let (_dir, conn) = database();
    let writer = Arc::new(GroupCommit::start(conn.clone(), "test-writer").unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let writer = writer.clone();
        tasks.spawn(async move { writer.submit(insert(&format!("a{i}"))).wait().await });
    }
    while let Some(outcome) = tasks.join_next().await {
        assert!(outcome.unwrap().is_ok());
    }
    assert_eq!(count(&conn), 64);
}

#[test]
fn dropping_the_writer_finishes_queued_writes() {
    let (_dir, conn) = database();
    let writer = GroupCommit::start(conn.clone(), "test-writer").unwrap();
    let tickets: Vec<_> = (0..20)
        .map(|i| writer.submit(insert(&format!("d{i}"))))
        .collect();
    drop(writer);
    for ticket in tickets {
        assert!(ticket.wait_blocking().is_ok());
    }
    assert_eq!(count(&conn), 20);
}
