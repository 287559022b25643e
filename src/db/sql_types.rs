//! How the domain's enums cross into SQL: the only place their stored strings are
//! read and written. A value the database holds that the code does not know is an
//! error, never a silent default.

use std::io::Write;

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Text;

use crate::domain::catalog::RunType;
use crate::domain::identity::IdentityPolicy;
use crate::domain::status::{Outcome, RunStatus};

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
                let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
                let parse: fn(&str) -> Option<$type> = $parse;
                parse(&text)
                    .ok_or_else(|| format!("unrecognized {} `{text}` in the database", stringify!($type)).into())
            }
        }
    };
}

text_enum!(RunStatus, RunStatus::parse);
text_enum!(Outcome, Outcome::parse);
text_enum!(IdentityPolicy, IdentityPolicy::parse);
text_enum!(RunType, |text| RunType::parse(text).ok());
