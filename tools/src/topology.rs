//! Test and bench networks: hosts in their own network namespaces on one bridge in a switch
//! namespace (multicast snooping off), with names unique to the caller. Everything lives in namespaces created
//! here (the root namespace is never touched) and is removed on drop, even after a failure.
//!
//! A host can be given a link rate ([`BridgeTopology::set_link_rate`]): a `tc tbf` qdisc on the
//! switch's port toward that host, so everything the host receives (unicast and multicast) is
//! limited to that rate, as behind a slower access link; and a random loss
//! ([`BridgeTopology::set_link_loss`]), as behind a lossy one.

use std::cell::Cell;
use std::process::Command;
use std::time::Duration;

pub struct BridgeTopology {
    /// Namespaces in creation order (switch first); deleted in reverse.
    names: Vec<String>,
    /// (namespace, address) of each host, in the order given.
    pub hosts: Vec<(String, String)>,
    /// IGMP snooping is on and past its start-up delay ([`BridgeTopology::snoop_igmp`]).
    snooping: Cell<bool>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    iproute2("ip", args)
}

fn tc(args: &[&str]) -> Result<(), String> {
    iproute2("tc", args)
}

/// Runs an iproute2 `program` (ip, tc); its stderr is the error.
fn iproute2(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program} (install iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The snooping bridge's query response interval, centiseconds (the kernel's unit): also how
/// long after the querier starts the bridge floods every group.
const SNOOPING_RESPONSE_INTERVAL_CS: u64 = 100;

impl BridgeTopology {
    /// Creates `<tag>-sw` with a bridge (multicast snooping off) and one namespace per host,
    /// `<tag>-<suffix>` at `<address>/24` on `veth0`, multicast routed out of veth0. Needs root.
    pub fn build(tag: &str, hosts: &[(&str, &str)], mtu: u32) -> Result<BridgeTopology, String> {
        let switch = format!("{tag}-sw");
        let mtu = mtu.to_string();
        let mut topology = BridgeTopology {
            names: vec![],
            hosts: vec![],
            snooping: Cell::new(false),
        };
        ip(&["netns", "add", &switch])?;
        topology.names.push(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &switch,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &switch, "link", "set", "br0", "mtu", &mtu, "up"])?;
        for (index, (suffix, address)) in hosts.iter().enumerate() {
            let ns = format!("{tag}-{suffix}");
            ip(&["netns", "add", &ns])?;
            topology.names.push(ns.clone());
            let port = format!("p{index}");
            ip(&[
                "-n", &switch, "link", "add", &port, "mtu", &mtu, "type", "veth", "peer", "name",
                "veth0", "netns", &ns,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "link",
                "set",
                "veth0",
                "mtu",
                &mtu,
                "multicast",
                "on",
                "up",
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{address}/24"),
                // With a broadcast address, like any real LAN: udpcast's rendezvous broadcasts.
                "brd",
                "+",
                "dev",
                "veth0",
            ])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "veth0"])?;
            topology.hosts.push((ns, address.to_string()));
        }
        Ok(topology)
    }

    /// Limits what host `index` receives to `rate_bits_per_s` (0: unlimited, the qdisc removed),
    /// with a token bucket filter on the switch's port toward it ([`LinkShape`]), and turns on
    /// IGMP snooping (with a querier) on the bridge.
    pub fn set_link_rate(&self, index: usize, rate_bits_per_s: u64) -> Result<(), String> {
        assert!(index < self.hosts.len(), "host {index} out of range");
        let switch = &self.names[0];
        let port = format!("p{index}");
        if rate_bits_per_s == 0 {
            // Deleting a qdisc that is not there fails; only a leftover one matters.
            let _ = tc(&["-n", switch, "qdisc", "del", "dev", &port, "root"]);
            return Ok(());
        }
        // Behind a limited link a host must get only the groups it joined, as behind any
        // switch with IGMP snooping: else every multicast tier of a file (and every other
        // file) is flooded into its link and crowds out its own.
        self.snoop_igmp()?;
        // And it stops getting a group as soon as it leaves it (IGMP fast leave on its port, as
        // switches for IPTV do), so a client moved to a slower tier is not flooded with the
        // faster one for the seconds a plain leave takes.
        ip(&[
            "-n",
            switch,
            "link",
            "set",
            "dev",
            &port,
            "type",
            "bridge_slave",
            "fastleave",
            "on",
        ])?;
        let shape = LinkShape::for_rate(rate_bits_per_s);
        tc(&[
            "-n",
            switch,
            "qdisc",
            "replace",
            "dev",
            &port,
            "root",
            "tbf",
            "rate",
            &format!("{rate_bits_per_s}bit"),
            "burst",
            &shape.burst_bytes.to_string(),
            "latency",
            &format!("{}ms", shape.queue_latency_ms),
        ])
    }

    /// Drops `percent` % of the UDP datagrams host `index` receives, at random (nftables
    /// `numgen random` on the host's ingress, as a lossy access link; 0 removes the rule).
    /// Everything UDP is dropped alike: data, repairs and the server's control messages.
    pub fn set_link_loss(&self, index: usize, percent: u8) -> Result<(), String> {
        assert!(index < self.hosts.len(), "host {index} out of range");
        assert!(percent <= 100, "a loss of {percent} % is not a percentage");
        let ns = &self.hosts[index].0;
        let nft = |script: &str| -> Result<(), String> {
            use std::io::Write;
            let mut child = Command::new("ip")
                .args(["netns", "exec", ns, "nft", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run nft (install nftables): {e}"))?;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(script.as_bytes())
                .map_err(|e| format!("nft: {e}"))?;
            let output = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "nft in {ns}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        };
        // `add` then `delete` removes a table that may or may not be there, in one go.
        nft("add table inet loopcast_loss\ndelete table inet loopcast_loss\n")?;
        if percent == 0 {
            return Ok(());
        }
        nft(&format!(
            "table inet loopcast_loss {{\n  chain ingress {{\n    type filter hook prerouting priority -300; policy accept;\n    meta l4proto udp numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
        ))
    }

    /// Turns on IGMP snooping with the bridge as querier (once), and waits until the bridge
    /// trusts what it has learnt. Until then a snooping bridge floods every group to every
    /// port: the querier's start-up delay is the query response interval in force when the
    /// querier is switched on (10 s by default), so the interval is set to 1 s first and the
    /// querier after it. Measured: with the default order, a 5 Mbit/s port was flooded with a
    /// 1 Gbit/s group for 10 s after set-up, and (its zero-copy notifications held in that
    /// port's queue) the sender ran at 47 Mbit/s for everyone.
    fn snoop_igmp(&self) -> Result<(), String> {
        if self.snooping.get() {
            return Ok(());
        }
        let switch = &self.names[0];
        let bridge = |settings: &[&str]| {
            let mut args = vec!["-n", switch, "link", "set", "br0", "type", "bridge"];
            args.extend_from_slice(settings);
            ip(&args)
        };
        bridge(&[
            "mcast_snooping",
            "1",
            "mcast_query_response_interval",
            &SNOOPING_RESPONSE_INTERVAL_CS.to_string(),
        ])?;
        bridge(&["mcast_querier", "1"])?;
        std::thread::sleep(Duration::from_millis(
            SNOOPING_RESPONSE_INTERVAL_CS * 10 + 300,
        ));
        self.snooping.set(true);
        Ok(())
    }

    /// A command that runs `program` inside host `index`'s namespace.
    pub fn exec(&self, index: usize, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.hosts[index].0])
            .arg(program);
        command
    }
}

/// Token bucket parameters for a link of a given rate.
///
/// Measured with a TCP bulk flow and a UDP ping beside it, through a veth bridge on a 2-core
/// machine (goodput, median RTT): 5 Mbit/s 4.8 Mbit/s 17 ms; 50 Mbit/s 47.8 Mbit/s 5 ms;
/// 500 Mbit/s 477 Mbit/s 3.6 ms; 10 Gbit/s 9.3 Gbit/s 1.4 ms (the sender's own limit).
/// A 64 KiB bucket at 5 Mbit/s gave the same goodput but a 60 ms median RTT (a big bucket
/// lets a burst through that then waits in the queue), so the bucket scales with the rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkShape {
    /// Bucket size: 1 ms at the rate, at least 16 KiB (above one 9000-byte frame, and enough
    /// that a late timer wake-up on a busy host does not waste tokens).
    pub burst_bytes: u64,
    /// How long a packet may wait in the queue before it is dropped: 20 ms, the buffer of an
    /// ordinary access link. A longer queue only adds RTT; a shorter one drops bursts that a
    /// link of this rate would carry.
    pub queue_latency_ms: u32,
}

impl LinkShape {
    pub const BURST_BYTES_MIN: u64 = 16 << 10;
    pub const QUEUE_LATENCY_MS: u32 = 20;

    pub fn for_rate(rate_bits_per_s: u64) -> LinkShape {
        assert!(rate_bits_per_s > 0, "an unlimited link has no shape");
        LinkShape {
            burst_bytes: (rate_bits_per_s / 8 / 1000).max(Self::BURST_BYTES_MIN),
            queue_latency_ms: Self::QUEUE_LATENCY_MS,
        }
    }
}

impl Drop for BridgeTopology {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LinkShape;

    #[test]
    fn link_shape_bucket_scales_with_the_rate_above_a_floor() {
        assert_eq!(LinkShape::for_rate(5_000_000).burst_bytes, 16 << 10);
        assert_eq!(LinkShape::for_rate(50_000_000).burst_bytes, 16 << 10);
        assert_eq!(LinkShape::for_rate(500_000_000).burst_bytes, 62_500);
        assert_eq!(LinkShape::for_rate(10_000_000_000).burst_bytes, 1_250_000);
        assert!(
            LinkShape::for_rate(1).burst_bytes > 9014,
            "holds a jumbo frame"
        );
    }
}
