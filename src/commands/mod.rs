//! The command line (`opsrun serve`, `migrate`, `token`, `reap`, `openapi`, `seed`,
//! `adopt`, `legacy`) and what its commands need before they start: the database,
//! embedded or not (bootstrap, embedded_pg), and the log output (logging).

pub mod adopt;
pub mod bootstrap;
pub mod cli;
pub mod embedded_pg;
pub mod legacy;
pub mod logging;
pub mod seed;
