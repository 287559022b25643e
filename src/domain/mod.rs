//! Pure domain logic: the operation-type catalog, run identity, the state machine,
//! authorization decisions and the sanitizing of what workers report. No I/O here.

pub mod access;
pub mod catalog;
pub mod context;
pub mod counts;
pub mod failures;
pub mod identity;
pub mod inputs;
pub mod staleness;
pub mod status;
