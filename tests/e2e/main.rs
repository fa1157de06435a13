//! End-to-end tests: real loopcast binaries as separate processes. See support.rs.
