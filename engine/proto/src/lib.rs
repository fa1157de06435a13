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
//! - [`carousel`]: the server-side loop scheduler with pacing and membership (R9).
//! - [`receiver`]: the client-side verified-have state (R9, R14).
//! - [`nak`]: which serials went by without arriving, and when to ask for them (R10).

pub mod assemble;
pub mod bitmap;
pub mod carousel;
pub mod info;
pub mod layout;
pub mod nak;
pub mod receiver;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;
pub mod wire;

pub use time::Instant;
