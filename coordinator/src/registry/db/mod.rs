//! The registry's SQL, on either backend: SQLite (embedded, one coordinator) or PostgreSQL
//! (several coordinators sharing one database). The registry's modules write their queries once,
//! with SQLite's `?N` parameters, against [`Sql`]; each backend runs them (PostgreSQL's gets
//! `$N`). What differs between the dialects (schema, locking) is asked of [`Sql::dialect`].

pub mod postgres;
pub mod sqlite;

use crate::error::CoordError;

/// Which SQL the database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A parameter or a column's value: the four types the registry stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<u32> for Value {
    fn from(value: u32) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_string())
    }
}

impl From<&String> for Value {
    fn from(value: &String) -> Self {
        Value::Text(value.clone())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<&[u8]> for Value {
    fn from(value: &[u8]) -> Self {
        Value::Blob(value.to_vec())
    }
}

impl From<&Vec<u8>> for Value {
    fn from(value: &Vec<u8>) -> Self {
        Value::Blob(value.clone())
    }
}

impl From<Vec<u8>> for Value {
    fn from(value: Vec<u8>) -> Self {
        Value::Blob(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// The parameters of one query, as `&[Value]`.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        &[$($crate::registry::db::Value::from($value)),*]
    };
}
pub(crate) use args;

/// One result row.
#[derive(Debug)]
pub struct Row(pub(crate) Vec<Value>);

fn unexpected(index: usize, wanted: &str, found: &Value) -> CoordError {
    let found = match found {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    };
    CoordError::config(
        "registry",
        format!(
            "column {index} holds {found} where {wanted} was expected (a schema this binary does not know?)"
        ),
    )
}

impl Row {
    fn at(&self, index: usize) -> Result<&Value, CoordError> {
        self.0
            .get(index)
            .ok_or_else(|| CoordError::config("registry", format!("a row has no column {index}")))
    }

    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, CoordError> {
        match self.at(index)? {
            Value::Null => Ok(None),
            Value::Int(value) => Ok(Some(*value)),
            other => Err(unexpected(index, "an integer", other)),
        }
    }

    pub fn int(&self, index: usize) -> Result<i64, CoordError> {
        self.opt_int(index)?
            .ok_or_else(|| unexpected(index, "an integer", &Value::Null))
    }

    pub fn opt_text(&self, index: usize) -> Result<Option<String>, CoordError> {
        match self.at(index)? {
            Value::Null => Ok(None),
            Value::Text(value) => Ok(Some(value.clone())),
            other => Err(unexpected(index, "text", other)),
        }
    }

    pub fn text(&self, index: usize) -> Result<String, CoordError> {
        self.opt_text(index)?
            .ok_or_else(|| unexpected(index, "text", &Value::Null))
    }

    pub fn blob(&self, index: usize) -> Result<Vec<u8>, CoordError> {
        match self.at(index)? {
            Value::Blob(value) => Ok(value.clone()),
            other => Err(unexpected(index, "bytes", other)),
        }
    }
}

/// A connection, or a transaction on one, that runs the registry's queries.
pub trait Sql {
    fn dialect(&self) -> Dialect;

    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, CoordError>;

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, CoordError>;

    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, CoordError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Serialises this transaction's writes to `table` with every other coordinator's (the
    /// lock is held until the transaction ends; plain reads are not blocked). SQLite needs none:
    /// one process, and its writes go through one connection under a lock.
    fn lock_table(&mut self, table: &str) -> Result<(), CoordError> {
        match self.dialect() {
            Dialect::Sqlite => Ok(()),
            Dialect::Postgres => self
                .execute(&format!("LOCK TABLE {table} IN EXCLUSIVE MODE"), &[])
                .map(|_| ()),
        }
    }

    /// Lets this transaction commit without waiting for its write to reach the disk (PostgreSQL's
    /// `synchronous_commit = off`, this transaction only): for state whose last changes a
    /// database crash may lose harmlessly (a rate budget's ticks, a claim that would lapse
    /// anyway). SQLite's writes here stay as they are.
    fn relax_durability(&mut self) -> Result<(), CoordError> {
        Ok(())
    }

    /// `FOR UPDATE` where the dialect has row locks (a read-modify-write of one row).
    fn for_update(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}
