//! Pure domain logic: the operation-type catalog, run identity, the state machine,
//! authorization decisions and the sanitizing of what workers report. No I/O here.

/// Defines a closed set: the enum, `ALL` in declaration order, `as_str` and `parse`, each
/// variant's name written once beside it. Derives beyond the basic ones are passed in
/// (serde's `rename_all = "snake_case"` must agree with the names; tests check).
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$variant_meta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $( $(#[$variant_meta])* $variant ),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The value's name, as stored, served and sent.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(name: &str) -> Option<$name> {
                $name::ALL.into_iter().find(|value| value.as_str() == name)
            }
        }
    };
}
pub(crate) use named_enum;

pub mod access;
pub mod catalog;
pub mod context;
pub mod counts;
pub mod failures;
pub mod identity;
pub mod ids;
pub mod inputs;
pub mod staleness;
pub mod status;

use serde_json::Value;

/// A JSON number that is a whole number within i64, however it was written (`7`, `7.0`,
/// `7e0`): JSON Schema's `integer` accepts all three, so we do too.
pub fn integer(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        let float = value.as_f64()?;
        // i64::MAX is not exactly representable; 2^63 is the first float past the range.
        (float.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&float))
            .then_some(float as i64)
    })
}

/// A list of names for a message: `a, b, c`.
pub fn one_of(names: impl IntoIterator<Item = &'static str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}
