//! loopcast protocol core: sans-IO.
//!
//! No sockets, threads, clock reads or OS randomness. Drivers pass `now` (an [`Instant`])
//! and bytes in; the core answers with what to send, store or drop, and when to come back.
//!
//! ```text
//!  packer ──(assemble: datagrams + hash tree)──▶ archive ──(Carousel: which serials, when)──▶ wire
//!  wire ──(DatagramHeader::parse)──▶ Receiver::handle_datagram ──▶ Store{serial} / Dropped(reason)
//! ```
//! - [`wire`]: byte layouts of loop datagrams and control messages.
//! - [`info`]: the file info record and its root hash.
//! - [`layout`]: the hash tree's shape and each node's position in the loop.
//! - [`carousel`]: the server-side loop scheduler: pacing, repairs within a share (R9, R10).
//! - [`endpoint`]: the server's session rules: requests, address validation, limits, NAK
//!   budgets, expiry (R7–R10, R23).
//! - [`client`]: the client's session rules: request, SYNC or fallback, status, recovery.
//! - [`director`]: the traffic director's rules: server registry from heartbeats, expiry,
//!   routing (R15-R17).
//! - [`heartbeat`]: a server's heartbeats to the directors and its answers to their challenges
//!   (R15).
//! - [`rng`]: the seeded random source the machines take instead of the OS's.
//! - [`receiver`]: the client-side verified-have state (R9, R14).
//! - [`nak`]: which serials went by without arriving, and when to ask for them (R10).
//! - [`rate`]: per-client throughput estimates, tier rates and tier moves (R11, R12).
//! - [`play`]: the verified prefix a follower can play while the file arrives (R13).

pub mod assemble;
pub mod bitmap;
pub mod carousel;
pub mod client;
pub mod director;
pub mod endpoint;
pub mod heartbeat;
pub mod info;
pub mod layout;
pub mod nak;
pub mod play;
pub mod rate;
pub mod receiver;
pub mod rng;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;
pub mod wire;

pub use time::Instant;
