//! A batch of rows passed to one statement as a single JSON parameter.
//!
//! Bulk statements (a journal batch, a claim's picked ids) used to spell out a `VALUES`
//! list of placeholders, so their text changed with the row count: every batch was a new
//! statement for the database to parse and plan, and for sqlx to prepare (a round trip)
//! and evict from its per-connection cache. Read from a JSON array instead, a bulk
//! statement has one text whatever its size: prepared once per connection, planned from
//! its cache. The rows are a table expression both databases read natively
//! (`json_to_recordset` on PostgreSQL, `json_each` on SQLite).

use serde_json::{Map, Value};

use super::{DbKind, StoreError};

/// A column's SQL type, as the table expression reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Text,
    Int,
}

/// The rows of one bulk statement: named columns, built row by row, bound as one text.
#[derive(Debug)]
pub(crate) struct JsonRows {
    columns: &'static [(&'static str, Ty)],
    rows: Vec<Value>,
}

impl JsonRows {
    pub(crate) fn new(columns: &'static [(&'static str, Ty)]) -> JsonRows {
        JsonRows {
            columns,
            rows: Vec::new(),
        }
    }

    /// Adds a row: one value per column, in the columns' order.
    pub(crate) fn push(&mut self, values: impl IntoIterator<Item = Value>) {
        let row: Map<String, Value> = self
            .columns
            .iter()
            .zip(values)
            .map(|((name, _), value)| ((*name).to_owned(), value))
            .collect();
        debug_assert_eq!(row.len(), self.columns.len(), "one value per column");
        self.rows.push(Value::Object(row));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The parameter to bind. An error, never an empty batch, if the rows do not serialize:
    /// an empty batch would read as every fenced write refused.
    pub(crate) fn param(&self) -> Result<String, StoreError> {
        serde_json::to_string(&self.rows)
            .map_err(|e| StoreError::Corrupt(format!("bulk statement rows: {e}")))
    }

    /// The rows as a table expression aliased `alias`, reading parameter `$param`; its
    /// columns are named as given to [`JsonRows::new`].
    pub(crate) fn table(&self, kind: DbKind, param: usize, alias: &str) -> String {
        table(kind, self.columns, param, alias)
    }
}

fn table(kind: DbKind, columns: &[(&str, Ty)], param: usize, alias: &str) -> String {
    match kind {
        DbKind::Postgres => {
            let record = columns
                .iter()
                .map(|(name, ty)| {
                    let ty = match ty {
                        Ty::Text => "text",
                        Ty::Int => "bigint",
                    };
                    format!("{name} {ty}")
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("json_to_recordset(${param}::json) AS {alias}({record})")
        }
        DbKind::Sqlite => {
            let select = columns
                .iter()
                .map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("(SELECT {select} FROM json_each(${param})) AS {alias}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[(&str, Ty)] = &[("v_id", Ty::Text), ("v_n", Ty::Int)];

    #[test]
    fn one_statement_text_whatever_the_row_count() {
        let mut rows = JsonRows::new(COLUMNS);
        let empty = rows.table(DbKind::Postgres, 1, "v");
        rows.push([Value::from("a\"b"), Value::from(1)]);
        rows.push([Value::Null, Value::from(i64::MAX)]);
        assert_eq!(rows.table(DbKind::Postgres, 1, "v"), empty);
        assert_eq!(
            empty,
            "json_to_recordset($1::json) AS v(v_id text, v_n bigint)"
        );
        assert_eq!(
            rows.param().expect("rows serialize"),
            r#"[{"v_id":"a\"b","v_n":1},{"v_id":null,"v_n":9223372036854775807}]"#
        );
        assert_eq!(
            rows.table(DbKind::Sqlite, 3, "x"),
            "(SELECT json_extract(value, '$.v_id') AS v_id, json_extract(value, '$.v_n') AS v_n \
             FROM json_each($3)) AS x"
        );
    }
}
