//! Test and bench networks: hosts in their own network namespaces on one bridge in a switch
//! namespace (multicast snooping off), with names unique to the caller. Everything lives in namespaces created
//! here (the root namespace is never touched) and is removed on drop, even after a failure.

use std::process::Command;

pub struct BridgeTopology {
    /// Namespaces in creation order (switch first); deleted in reverse.
    names: Vec<String>,
    /// (namespace, address) of each host, in the order given.
    pub hosts: Vec<(String, String)>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (install iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl BridgeTopology {
    /// Creates `<tag>-sw` with a bridge (multicast snooping off) and one namespace per host,
    /// `<tag>-<suffix>` at `<address>/24` on `veth0`, multicast routed out of veth0. Needs root.
    pub fn build(tag: &str, hosts: &[(&str, &str)], mtu: u32) -> Result<BridgeTopology, String> {
        let switch = format!("{tag}-sw");
        let mtu = mtu.to_string();
        let mut topology = BridgeTopology {
            names: vec![],
            hosts: vec![],
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

    /// A command that runs `program` inside host `index`'s namespace.
    pub fn exec(&self, index: usize, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.hosts[index].0])
            .arg(program);
        command
    }
}

impl Drop for BridgeTopology {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
