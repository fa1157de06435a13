//! The distribution server (`loopcastd serve`): one mio event loop that owns the request
//! socket and every channel, and publishes a status snapshot for the admin socket, which
//! `loopcast_admin::AdminServer` serves on a thread of its own.
//!
//! ```text
//!  Request ──▶ catalog lookup ──▶ channel (one per file: Carousel + mapped archive)
//!                                   │ join session (multicast group, or unicast peer)
//!  Status/Joined/Leave ──▶ session ─┘
//!  loop: Carousel::poll_transmit ──▶ BatchSender (sendmmsg+GSO) ──▶ group and/or each peer
//! ```
//! Channels close when their last session finishes, leaves or goes silent (R9).

#![recursion_limit = "256"]

mod catalog;
mod server;
pub mod verified;

/// A server's part in a fleet (`serve --director`): its rules are `proto::heartbeat`.
pub use loopcast_proto::heartbeat::FleetConfig;
pub use server::{
    bind, run, run_on, run_reloadable, MulticastConfig, Reload, ServerConfig, ServerError,
};
