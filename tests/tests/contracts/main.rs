//! Contracts of the product seen from outside: the CLI end to end (crash safety, `eval`,
//! hostile inputs, size limits), the weight file across crates and backends, the web crate's
//! engine against the native tiler, and property-based fuzzing of the untrusted-input parsers.
//!
//! One test binary (each integration-test binary links the whole trainer, so fewer binaries
//! build faster); the in-process training tests are in `training`.

mod crash_safety;
mod eval_cli;
mod fuzz;
mod hostile_inputs;
mod iqa;
mod limits;
mod taef2;
mod web_engine;
mod weights_contract;
