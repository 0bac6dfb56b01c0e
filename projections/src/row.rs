//! One column descriptor per view table: the typed row, its table name, its
//! columns and its key are declared once with [`view_row!`], and every use of
//! the columns — bulk `COPY`, multi-row insert and upsert, `SELECT`, decoding
//! a stored row back into the typed row — is driven by that declaration.

use std::borrow::Cow;
use std::collections::BTreeSet;

use aggregates::catalog::{
    Capability, Consent, CredentialStatus, OperationKind, Outcome, ReasonCode, Role, RunStatus,
    Scope,
};
use aggregates::execution::RunResult;
use aggregates::ids::{ClientId, ConnectionId, DecisionId, RunId, TenantId, UserId, WorkspaceId};

/// How a column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text, never null.
    Text,
    /// Text or null (the only nullable kind).
    NullableText,
    /// A boolean (an integer 0/1 on SQLite).
    Bool,
    /// A 64-bit integer.
    Int,
}

/// A column of a view table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Its name in both migrations.
    pub name: &'static str,
    /// How it is stored.
    pub kind: Kind,
}

/// A view table: its name, its columns in order, and its primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// The table's name.
    pub name: &'static str,
    /// Every column, in the order of [`ViewRow::cells`] and [`ViewRow::decode`].
    pub columns: &'static [Column],
    /// The primary key's columns.
    pub key: &'static [&'static str],
}

impl Table {
    /// The column names, comma-separated, each prefixed with `prefix` (`"c."`).
    pub fn column_list(&self, prefix: &str) -> String {
        let names: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{prefix}{}", c.name))
            .collect();
        names.join(", ")
    }

    /// The columns outside the primary key.
    pub fn non_key_columns(&self) -> impl Iterator<Item = &'static Column> {
        let key = self.key;
        self.columns.iter().filter(move |c| !key.contains(&c.name))
    }
}

/// One value to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell<'a> {
    /// Text; `None` is SQL NULL.
    Text(Option<Cow<'a, str>>),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
}

/// One value read back from a stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Text; `None` is SQL NULL.
    Text(Option<String>),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
}

/// A stored view row that does not read as its typed row: an error, never a
/// silent default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("view row in {table}: column {column} {why}")]
pub struct RowError {
    /// The table.
    pub table: &'static str,
    /// The column.
    pub column: &'static str,
    /// What is wrong with it.
    pub why: String,
}

/// A value that is stored in one column.
pub trait Field: Sized {
    /// How it is stored.
    const KIND: Kind;
    /// The value to write.
    fn cell(&self) -> Cell<'_>;
    /// Reads it back; the error says what is wrong.
    fn decode(value: Value) -> Result<Self, String>;
}

/// A primary key, as the cells of its columns.
pub trait Key: std::hash::Hash + Eq + Clone + std::fmt::Debug {
    /// The key's cells, in the order of [`Table::key`].
    fn cells(&self) -> Vec<Cell<'_>>;
}

/// A typed row of one view table, declared with [`view_row!`].
pub trait ViewRow: Clone + std::fmt::Debug + PartialEq {
    /// Its primary key.
    type Key: Key;
    /// Its table.
    const TABLE: Table;
    /// Its primary key's value.
    fn key(&self) -> Self::Key;
    /// Its values, in the order of [`Table::columns`].
    fn cells(&self) -> Vec<Cell<'_>>;
    /// Reads a stored row (values in the order of [`Table::columns`]).
    fn decode(values: Vec<Value>) -> Result<Self, RowError>;
}

fn text_of(value: Value) -> Result<Option<String>, String> {
    match value {
        Value::Text(text) => Ok(text),
        other => Err(format!("is not text: {other:?}")),
    }
}

/// Text columns: each type as itself and as `Option`.
macro_rules! text_fields {
    ($($ty:ty => |$v:ident| $text:expr),+ $(,)?) => {$(
        impl Field for $ty {
            const KIND: Kind = Kind::Text;
            fn cell(&self) -> Cell<'_> {
                let $v = self;
                Cell::Text(Some($text))
            }
            fn decode(value: Value) -> Result<Self, String> {
                let text = text_of(value)?.ok_or_else(|| "is null".to_owned())?;
                text.parse().map_err(|e| format!("does not parse: {e}"))
            }
        }

        impl Field for Option<$ty> {
            const KIND: Kind = Kind::NullableText;
            fn cell(&self) -> Cell<'_> {
                Cell::Text(self.as_ref().map(|$v| $text))
            }
            fn decode(value: Value) -> Result<Self, String> {
                text_of(value)?
                    .map(|text| text.parse().map_err(|e| format!("does not parse: {e}")))
                    .transpose()
            }
        }

        impl Key for $ty {
            fn cells(&self) -> Vec<Cell<'_>> {
                vec![Field::cell(self)]
            }
        }
    )+};
}

text_fields!(
    String => |v| Cow::Borrowed(v.as_str()),
    RunId => |v| Cow::Owned(v.to_string()),
    TenantId => |v| Cow::Owned(v.to_string()),
    ConnectionId => |v| Cow::Owned(v.to_string()),
    ClientId => |v| Cow::Owned(v.to_string()),
    DecisionId => |v| Cow::Owned(v.to_string()),
    UserId => |v| Cow::Owned(v.to_string()),
    WorkspaceId => |v| Cow::Owned(v.to_string()),
    OperationKind => |v| Cow::Borrowed(v.as_str()),
    RunStatus => |v| Cow::Borrowed(v.as_str()),
    Outcome => |v| Cow::Borrowed(v.as_str()),
    ReasonCode => |v| Cow::Borrowed(v.as_str()),
    Consent => |v| Cow::Borrowed(v.as_str()),
    CredentialStatus => |v| Cow::Borrowed(v.as_str()),
    Role => |v| Cow::Borrowed(v.as_str()),
);

impl Key for i64 {
    fn cells(&self) -> Vec<Cell<'_>> {
        vec![Cell::Int(*self)]
    }
}

impl<A: Key, B: Key> Key for (A, B) {
    fn cells(&self) -> Vec<Cell<'_>> {
        let mut cells = self.0.cells();
        cells.extend(self.1.cells());
        cells
    }
}

/// JSON text columns.
macro_rules! json_fields {
    ($($ty:ty),+) => {$(
        impl Field for $ty {
            const KIND: Kind = Kind::Text;
            fn cell(&self) -> Cell<'_> {
                Cell::Text(Some(Cow::Owned(
                    serde_json::to_string(self).expect("domain values serialize"),
                )))
            }
            fn decode(value: Value) -> Result<Self, String> {
                let text = text_of(value)?.ok_or_else(|| "is null".to_owned())?;
                serde_json::from_str(&text).map_err(|e| format!("is not the expected JSON: {e}"))
            }
        }
    )+};
}

json_fields!(Scope, BTreeSet<Capability>);

/// JSON text columns that may be null.
macro_rules! nullable_json_fields {
    ($($ty:ty),+) => {$(
        impl Field for Option<$ty> {
            const KIND: Kind = Kind::NullableText;
            fn cell(&self) -> Cell<'_> {
                Cell::Text(self.as_ref().map(|value| {
                    Cow::Owned(serde_json::to_string(value).expect("domain values serialize"))
                }))
            }
            fn decode(value: Value) -> Result<Self, String> {
                text_of(value)?
                    .map(|text| {
                        serde_json::from_str(&text)
                            .map_err(|e| format!("is not the expected JSON: {e}"))
                    })
                    .transpose()
            }
        }
    )+};
}

nullable_json_fields!(RunResult);

impl Field for bool {
    const KIND: Kind = Kind::Bool;
    fn cell(&self) -> Cell<'_> {
        Cell::Bool(*self)
    }
    fn decode(value: Value) -> Result<Self, String> {
        match value {
            Value::Bool(b) => Ok(b),
            other => Err(format!("is not a boolean: {other:?}")),
        }
    }
}

impl Field for i64 {
    const KIND: Kind = Kind::Int;
    fn cell(&self) -> Cell<'_> {
        Cell::Int(*self)
    }
    fn decode(value: Value) -> Result<Self, String> {
        match value {
            Value::Int(i) => Ok(i),
            other => Err(format!("is not an integer: {other:?}")),
        }
    }
}

/// Declares a typed view row and its table once:
///
/// ```ignore
/// view_row! {
///     /// A run.
///     pub struct Run in "view_runs", key (run_id): RunId {
///         /// The run.
///         pub run_id: RunId,
///         …
///     }
/// }
/// ```
///
/// Each field is a column of the same name, in declaration order.
#[macro_export]
macro_rules! view_row {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $table:literal, key ($($key:ident),+): $key_ty:ty {
            $( $(#[$fmeta:meta])* pub $field:ident: $ty:ty, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )+
        }

        impl $crate::row::ViewRow for $name {
            type Key = $key_ty;
            const TABLE: $crate::row::Table = $crate::row::Table {
                name: $table,
                columns: &[$($crate::row::Column {
                    name: stringify!($field),
                    kind: <$ty as $crate::row::Field>::KIND,
                }),+],
                key: &[$(stringify!($key)),+],
            };

            fn key(&self) -> Self::Key {
                ($(self.$key.clone()),+)
            }

            fn cells(&self) -> Vec<$crate::row::Cell<'_>> {
                vec![$($crate::row::Field::cell(&self.$field)),+]
            }

            fn decode(values: Vec<$crate::row::Value>) -> Result<Self, $crate::row::RowError> {
                let mut values = values.into_iter();
                Ok(Self {$(
                    $field: {
                        let error = |why: String| $crate::row::RowError {
                            table: $table,
                            column: stringify!($field),
                            why,
                        };
                        let value = values.next().ok_or_else(|| error("is missing".to_owned()))?;
                        <$ty as $crate::row::Field>::decode(value).map_err(error)?
                    },
                )+})
            }
        }
    };
}
