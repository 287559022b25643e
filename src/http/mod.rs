//! The HTTP edge: the server's wiring (startup), the routes, the one place that knows
//! statuses and problem+json (error), the token verifier (auth), CORS, what happens
//! around every request (request_log), and the OpenAPI document.

pub mod auth;
pub mod cors;
pub mod error;
pub mod openapi;
pub mod request_log;
pub mod routes;
pub mod startup;
