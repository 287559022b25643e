//! How the domain's enums cross into SQL: the only place their stored strings are
//! read and written. A value the database holds that the code does not know is an
//! error, never a silent default.

use std::io::Write;

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{Jsonb, Text};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::domain::catalog::RunType;
use crate::domain::identity::IdentityPolicy;
use crate::domain::status::{EventKind, Outcome, RunStatus};

macro_rules! text_enum {
    ($type:ty, $parse:expr) => {
        impl ToSql<Text, Pg> for $type {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                out.write_all(self.as_str().as_bytes())?;
                Ok(IsNull::No)
            }
        }

        impl FromSql<Text, Pg> for $type {
            fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
                // Read in place: a page of runs decodes several of these per row.
                let text = std::str::from_utf8(bytes.as_bytes())?;
                let parse: fn(&str) -> Option<$type> = $parse;
                parse(text).ok_or_else(|| format!("unrecognized {} `{text}` in the database", stringify!($type)).into())
            }
        }
    };
}

text_enum!(RunStatus, RunStatus::parse);
text_enum!(Outcome, Outcome::parse);
text_enum!(EventKind, EventKind::parse);
text_enum!(IdentityPolicy, IdentityPolicy::parse);
text_enum!(RunType, RunType::parse);

/// A jsonb value kept as its JSON text: read from the database and written to a response
/// without building a `serde_json::Value` tree in between.
///
/// The text is not parsed again on the way in. PostgreSQL parsed it when it stored the
/// jsonb and spells it back as valid JSON, and checking that cost a page of runs more
/// than decoding the rest of its rows. Serde's path (the live stream, tests) still checks it.
#[derive(Debug, Clone, diesel::deserialize::FromSqlRow)]
pub struct JsonText(Box<str>);

impl JsonText {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub fn of(value: &serde_json::Value) -> JsonText {
        JsonText(value.to_string().into())
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl FromSql<Jsonb, Pg> for JsonText {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        // jsonb's binary form is a version byte (1) followed by the JSON text.
        match value.as_bytes().split_first() {
            Some((1, text)) => Ok(JsonText(std::str::from_utf8(text)?.into())),
            _ => Err("unsupported jsonb binary format".into()),
        }
    }
}
