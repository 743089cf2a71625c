//! # paxos-bench
//!
//! Benchmarks reproducing the PSB paper's experiments.
//!
//! Not implemented yet: this crate is filled by issue #7. It exports nothing so that nothing can
//! mistake it for a working component.
