//! A server's side of the fleet (R15): the rules are `proto::heartbeat::HeartbeatSender`
//! (heartbeats, challenges); the server's loop sends what it returns from its request socket
//! and hands it the fleet datagrams that arrive there.

pub use loopcast_proto::heartbeat::{FleetConfig, HeartbeatSender, Load};
