//! loopcast data plane: the only crate with `unsafe` (each block carries a `// SAFETY:` note).
//!
//! - [`mapped`]: archives mapped read-only; a transmit is a byte range of the map.
//! - [`send`]: batched sends: `sendmmsg` with UDP GSO (`UDP_SEGMENT`), stepping down to plain
//!   `sendmmsg` when the kernel refuses GSO. No allocation per call: buffers sized at start.
//! - [`recv`]: batched receives with `recvmmsg` into buffers sized at start.
//! - [`socket`]: UDP socket set-up (buffers, multicast membership and interface).
//! - [`netns`]: a private user + network namespace where multicast on loopback is safe.
//! - [`lease`]: whether anyone else holds a file open for writing (a write lease, released at once).
//! - [`ceiling`]: the raw `sendmmsg` + GSO blaster every send figure is divided by.
//!
//! The io_uring SEND_ZC path (issue 5) will sit beside `send` behind the same probe.

pub mod ceiling;
pub mod hash_lanes;
pub mod lease;
pub mod mapped;
pub mod netns;
pub mod pool;
pub mod recv;
pub mod send;
pub mod socket;
pub mod uring;
