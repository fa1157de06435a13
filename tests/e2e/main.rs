//! End-to-end tests: the real binaries as separate processes, talking over real UDP.
//!
//! - unicast.rs: server + clients on the host's loopback (no multicast in the host namespace).
//! - multicast.rs: server and clients in network namespaces the test creates (root: `ip netns`
//!   with a bridge; non-root: one unprivileged user+network namespace), removed even on failure.
//! - resume.rs: a client killed mid-download resumes where it stopped (R14).
//! - files.rs: safe files: two gets on one output, planted symlinks, existing outputs and
//!   --force, extract failures leaving no plaintext, a full disk, and the exit codes.
//! - hostile.rs: garbage on the request port, a damaged archive in the media database, bit rot
//!   found by the server's background check.
//! - admin.rs: idle admin connections do not stall the server; a squatted admin socket place
//!   is refused by the daemon and by loopcastctl (root: acts as two other users).
//! - repair.rs: NAK repair under nftables packet loss inside namespaces (R10), and suppression
//!   of NAKs for losses every receiver shares.

mod admin;
mod bench;
mod demo;
mod files;
mod hostile;
mod multicast;
mod repair;
mod resume;
mod support;
mod unicast;
