//! What can go wrong below the HTTP edge when talking to PostgreSQL. Database code
//! returns this (or diesel's own error); `error.rs` maps it to a response.

use diesel::result::{DatabaseErrorKind, Error};

/// A failed piece of database work.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The server is away, or the connection to it broke: worth retrying later.
    #[error("the database is unavailable")]
    Unavailable,
    /// The work outlived its budget: the client's wait or the server's statement timeout.
    #[error("the database work took longer than its budget")]
    Timeout,
    #[error(transparent)]
    Query(Error),
}

impl From<Error> for DbError {
    fn from(error: Error) -> DbError {
        match error {
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _) => {
                DbError::Unavailable
            }
            Error::DatabaseError(_, ref info) if info.message().contains(STATEMENT_TIMEOUT) => DbError::Timeout,
            Error::DatabaseError(_, ref info) if is_connection_loss(info.message()) => DbError::Unavailable,
            // A connection lost mid-transaction leaves diesel's transaction state unknown.
            Error::BrokenTransactionManager => DbError::Unavailable,
            other => DbError::Query(other),
        }
    }
}

impl From<diesel::r2d2::PoolError> for DbError {
    fn from(_: diesel::r2d2::PoolError) -> DbError {
        DbError::Unavailable
    }
}

/// What PostgreSQL says when `statement_timeout` cancels a statement.
const STATEMENT_TIMEOUT: &str = "canceling statement due to statement timeout";

/// PostgreSQL going away mid-query surfaces as these messages rather than a distinct kind.
fn is_connection_loss(message: &str) -> bool {
    [
        "terminating connection",
        "server closed the connection",
        "connection to server",
        "the database system is",
        "could not receive data from server",
        "no connection to the server",
    ]
    .iter()
    .any(|fragment| message.contains(fragment))
}
