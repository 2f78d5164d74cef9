//! [`Sql`] on PostgreSQL, and the coordinator's pool of connections to it.
//!
//! The registry's interface is synchronous (SQLite's is, and a registry call is short), so the
//! PostgreSQL backend uses the `postgres` crate: the synchronous face of `tokio-postgres`, which
//! runs each connection on a small runtime of its own. That runtime cannot be driven from a
//! thread that is already running async tasks, so every call runs on a scoped thread of its own
//! while the caller waits, as it waits for SQLite's lock or fsync today.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{GenericClient, NoTls, Statement};

use super::{Dialect, Row, Sql, Value};
use crate::error::CoordError;

/// Most connections one coordinator opens (each is a server process on the database's host).
pub const MAX_CONNECTIONS: usize = 16;

/// How long a connection attempt may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(value) => match *ty {
                Type::INT8 => value.to_sql(ty, out),
                Type::INT4 => i32::try_from(*value)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*value)?.to_sql(ty, out),
                Type::BOOL => (*value != 0).to_sql(ty, out),
                _ => Err(format!("an integer given for a {ty} parameter").into()),
            },
            Value::Text(text) => text.as_str().to_sql(ty, out),
            Value::Blob(bytes) => bytes.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`, which knows which variant it holds.
        true
    }

    to_sql_checked!();
}

fn column(row: &postgres::Row, index: usize) -> Result<Value, CoordError> {
    let ty = row.columns()[index].type_().clone();
    let value = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)?
            .map(|value| Value::Int(value.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)?
            .map(|value| Value::Int(value.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)?
            .map(|value| Value::Int(value.into())),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(index)?.map(Value::Blob),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
            row.try_get::<_, Option<String>>(index)?.map(Value::Text)
        }
        Type::VOID => None,
        other => {
            return Err(CoordError::config(
                "registry",
                format!("a column of type {other} (a schema this binary does not know?)"),
            ));
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

/// The registry's `?N` parameters as PostgreSQL's `$N`.
fn dollar_parameters(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// Most statements one connection keeps prepared (the registry has a fixed set of queries; the
/// bound only guards against a bug that would make them up).
const MAX_STATEMENTS: usize = 256;

/// A PostgreSQL client or transaction as the registry's queries see it, with its connection's
/// prepared statements (each query is parsed once per connection, not once per call: one round
/// trip less each time).
pub struct Pg<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> Pg<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<Statement, CoordError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&dollar_parameters(sql))?;
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

impl<C: GenericClient> Sql for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, CoordError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        Ok(self.client.execute(&statement, &params)?)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, CoordError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        self.client
            .query(&statement, &params)?
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|index| column(row, index))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row)
            })
            .collect()
    }

    fn relax_durability(&mut self) -> Result<(), CoordError> {
        self.client
            .batch_execute("SET LOCAL synchronous_commit = off")?;
        Ok(())
    }
}

/// Where and how to connect; the password comes from the environment, never from a file.
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
}

impl Target {
    /// Parses a `postgres://user@host:port/database` URL (or key=value string). A password in
    /// it is refused: it would sit in a config file in plain text.
    pub fn parse(url: &str, password: Option<&str>) -> Result<Self, CoordError> {
        let mut config: postgres::Config = url.parse().map_err(|_| {
            CoordError::config(
                "database",
                "not a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE)",
            )
        })?;
        if config.get_password().is_some() {
            return Err(CoordError::config(
                "database",
                "the URL carries a password; give it in SHARDSIGN_DATABASE_PASSWORD instead",
            ));
        }
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("shardsign-coordinator");
        Ok(Target { config })
    }

    /// The same server and user, another database (the tests' throw-away ones).
    pub fn with_database(&self, name: &str) -> Target {
        let mut config = self.config.clone();
        config.dbname(name);
        Target { config }
    }

    /// A connection outside any pool (set-up work such as creating a database).
    pub fn connect(&self) -> Result<postgres::Client, CoordError> {
        self.config.connect(NoTls).map_err(|error| {
            CoordError::config(
                "database",
                format!("cannot connect to {}: {error}", self.describe()),
            )
        })
    }

    /// Where it points, for messages: user, hosts, port and database, never the password.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|host| match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        format!(
            "postgres://{}@{}:{}/{}",
            self.config.get_user().unwrap_or(""),
            hosts.join(","),
            self.config.get_ports().first().copied().unwrap_or(5432),
            self.config.get_dbname().unwrap_or("")
        )
    }
}

/// A connection out of the pool: given back when dropped, even if the work panicked (else its
/// slot would be lost for good).
struct Lent<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if std::thread::panicking() {
                // Mid-transaction state unknown: close it rather than lend it again.
                drop(conn);
                self.pool.state().open -= 1;
                self.pool.freed.notify_one();
            } else {
                self.pool.give_back(conn);
            }
        }
    }
}

/// Creates an empty database named `name` on `server`'s server; returns its target (tests and
/// the HA harness use throw-away ones).
pub fn create_database(server: &Target, name: &str) -> Result<Target, CoordError> {
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(CoordError::invalid(
            "database",
            "lowercase letters, digits and _ only",
        ));
    }
    // On a thread of its own: the caller may be running async tasks (see the module's comment).
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                server
                    .connect()?
                    .batch_execute(&format!("CREATE DATABASE {name}"))?;
                Ok(server.with_database(name))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(CoordError::config(
                    "database",
                    "creating a database panicked",
                ))
            })
    })
}

/// Connections kept open between calls, up to [`MAX_CONNECTIONS`] in use at once.
pub struct Pool {
    target: Target,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Conn>,
    open: usize,
}

/// A pooled connection and its prepared statements.
pub struct Conn {
    pub client: postgres::Client,
    statements: HashMap<String, Statement>,
}

impl Pool {
    pub fn new(target: Target) -> Self {
        Pool {
            target,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection, a new one, or (all in use) the next one given back.
    fn take(&self) -> Result<Conn, CoordError> {
        let mut state = self.state();
        loop {
            if let Some(conn) = state.idle.pop() {
                if conn.client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(conn);
            }
            if state.open < MAX_CONNECTIONS {
                state.open += 1;
                drop(state);
                let connected = self.target.config.connect(NoTls).map(|client| Conn {
                    client,
                    statements: HashMap::new(),
                });
                return connected.map_err(|error| {
                    self.state().open -= 1;
                    self.freed.notify_one();
                    CoordError::Unavailable(format!(
                        "cannot connect to the registry database {}: {error}",
                        self.target.describe()
                    ))
                });
            }
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn give_back(&self, conn: Conn) {
        let mut state = self.state();
        if conn.client.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(conn);
        }
        self.freed.notify_one();
    }

    /// Runs `work` on a pooled connection, on a thread of its own (see the module's comment).
    pub fn run<T: Send>(
        &self,
        work: impl FnOnce(&mut Conn) -> Result<T, CoordError> + Send,
    ) -> Result<T, CoordError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.run_here(work))
                .join()
                .unwrap_or_else(|_| {
                    Err(CoordError::config(
                        "database",
                        "a registry call panicked; see the log",
                    ))
                })
        })
    }

    /// Runs `work` on a pooled connection on this thread, which must not be running async tasks.
    fn run_here<T>(
        &self,
        work: impl FnOnce(&mut Conn) -> Result<T, CoordError>,
    ) -> Result<T, CoordError> {
        let mut lent = Lent {
            pool: self,
            conn: Some(self.take()?),
        };
        let conn = lent.conn.as_mut().expect("just taken");
        work(conn)
    }

    /// Runs `work` in one transaction (committed if it returns `Ok`, else rolled back).
    pub fn transaction<T: Send>(
        &self,
        work: impl FnOnce(&mut dyn Sql) -> Result<T, CoordError> + Send,
    ) -> Result<T, CoordError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.transaction_here(work))
                .join()
                .unwrap_or_else(|_| {
                    Err(CoordError::config(
                        "database",
                        "a registry call panicked; see the log",
                    ))
                })
        })
    }

    /// [`Pool::transaction`] on this thread, which must not be running async tasks.
    pub fn transaction_here<T>(
        &self,
        work: impl FnOnce(&mut dyn Sql) -> Result<T, CoordError>,
    ) -> Result<T, CoordError> {
        self.run_here(|conn| {
            let mut tx = conn.client.transaction()?;
            let result = work(&mut Pg {
                client: &mut tx,
                statements: &mut conn.statements,
            })?;
            tx.commit()?;
            Ok(result)
        })
    }

    /// Runs `work` outside a transaction (each statement commits on its own).
    pub fn autocommit<T: Send>(
        &self,
        work: impl FnOnce(&mut dyn Sql) -> Result<T, CoordError> + Send,
    ) -> Result<T, CoordError> {
        self.run(|conn| {
            work(&mut Pg {
                client: &mut conn.client,
                statements: &mut conn.statements,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_renumbered_for_postgres() {
        assert_eq!(
            dollar_parameters("SELECT a FROM t WHERE b = ?1 AND c IN (?2, ?12) AND d = '?'"),
            "SELECT a FROM t WHERE b = $1 AND c IN ($2, $12) AND d = '?'"
        );
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_never_described() {
        let error = Target::parse("postgres://app:hunter2@db:5432/reg", None)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("SHARDSIGN_DATABASE_PASSWORD"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let target = Target::parse("postgres://app@db:5433/reg", Some("hunter2")).unwrap();
        assert_eq!(target.describe(), "postgres://app@db:5433/reg");
        assert!(Target::parse("mysql://x", None).is_err());
    }
}
