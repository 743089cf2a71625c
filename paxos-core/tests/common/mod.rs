//! Shared helpers of the fuzz tests: a ledger state machine, the step language, the resolver, the
//! driver and the property checker.

#![allow(dead_code)]

pub(crate) mod checks;
mod checks_fail;
pub(crate) mod harness;
pub(crate) mod ledger;
pub(crate) mod resolve;
pub(crate) mod steps;
