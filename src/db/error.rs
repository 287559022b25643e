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

impl DbError {
    /// An error of this code's own, answered as a 500.
    pub fn internal(message: &str) -> DbError {
        DbError::Query(Error::QueryBuilderError(message.into()))
    }

    /// The server is a standby: as unavailable as a write refused there, and its
    /// connection is retired the same way.
    pub fn standby() -> DbError {
        DbError::from(Error::DatabaseError(
            DatabaseErrorKind::ReadOnlyTransaction,
            Box::new("the server is a standby".to_owned()),
        ))
    }

    /// The same failure for another caller of one shared piece of work (a batch).
    pub fn shared(&self) -> DbError {
        match self {
            DbError::Unavailable => DbError::Unavailable,
            DbError::Timeout => DbError::Timeout,
            DbError::Query(error) => DbError::internal(&error.to_string()),
        }
    }
}

impl From<Error> for DbError {
    fn from(error: Error) -> DbError {
        let classified = match error {
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _) => {
                DbError::Unavailable
            }
            // A write reached a server that is (now) a standby: the primary moved (a
            // failover or switchover). Retrying on a fresh connection finds the new one.
            Error::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, _) => DbError::Unavailable,
            Error::DatabaseError(_, ref info) if info.message().contains(STATEMENT_TIMEOUT) => DbError::Timeout,
            Error::DatabaseError(_, ref info) if is_connection_loss(info.message()) => DbError::Unavailable,
            // A connection lost mid-transaction leaves diesel's transaction state unknown.
            Error::BrokenTransactionManager => DbError::Unavailable,
            other => DbError::Query(other),
        };
        classified
    }
}

impl From<diesel::r2d2::PoolError> for DbError {
    fn from(_: diesel::r2d2::PoolError) -> DbError {
        // No connection was handed out: none to retire.
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
