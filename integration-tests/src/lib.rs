//! integration-tests: the benchmarks' shared parts (the tests live under `tests/`).

pub mod chain;
