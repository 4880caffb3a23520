//! The HTTP API end to end: a real server on a loopback port, driven by a
//! small hyper client (one connection per request), with the data directory
//! audited once the server has stopped.
//!
//! Nothing here waits a fixed time: whatever arrives asynchronously (credits
//! to another set, expiry, refunds) is polled for with a bound, or, for
//! expiry, brought about by moving the server's clock.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod auth;
mod bills;
mod bodies_and_routes;

mod cluster;
mod concurrency;
mod console;
mod daily_limits;
mod days;
mod events;
mod expiry;
mod frozen;
mod groups;
mod helpers;
mod idempotency;
mod lists;
mod money;
mod observability;
mod open_and_grab;
mod openapi;
mod read_your_writes;
mod restart;
mod reversals;
mod validation;
mod walkthrough;
mod withdrawals;
