//! [`Sql`] on a SQLite connection (or a transaction, which derefs to one).

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{Dialect, Row, Sql, Value};
use crate::error::CoordError;

/// A SQLite connection as the registry's queries see it.
pub struct Lite<'a>(pub &'a Connection);

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(rusqlite::types::Value::Null),
            Value::Int(value) => ToSqlOutput::Owned(rusqlite::types::Value::Integer(*value)),
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Blob(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
        })
    }
}

fn value(column: ValueRef<'_>) -> Result<Value, CoordError> {
    Ok(match column {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(value) => Value::Int(value),
        ValueRef::Text(text) => Value::Text(
            String::from_utf8(text.to_vec())
                .map_err(|_| CoordError::config("registry", "a text column is not UTF-8"))?,
        ),
        ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
        ValueRef::Real(_) => {
            return Err(CoordError::config(
                "registry",
                "a column holds a floating-point number (a schema this binary does not know?)",
            ));
        }
    })
}

impl Sql for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, CoordError> {
        let mut statement = self.0.prepare_cached(sql)?;
        Ok(statement.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, CoordError> {
        let mut statement = self.0.prepare_cached(sql)?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..columns)
                .map(|index| value(row.get_ref(index)?))
                .collect::<Result<Vec<_>, CoordError>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }
}
