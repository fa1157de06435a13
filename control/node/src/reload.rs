//! SIGHUP on `loopcastd serve` (issue 11): the media database is rescanned at once, and the
//! config file is read again (the command line still over it). What the server can change while
//! it runs is applied and logged (old -> new); what needs a restart is logged as such and left
//! as it runs; a file that does not parse or check changes nothing.
//!
//! Live: `--rate` (the cap of every tier, or the fixed rate), `--tier-policy`, `--tiers`,
//! `--initial-rate` (all through `Endpoint::reconfigure`), `--session-timeout`, `--no-verify`
//! (archives opened from now on), and in a fleet `--location`, `--heartbeat-ms` and the rate
//! the directors are told (a heartbeat goes out at once). Restart only: the sockets and
//! threads made at start (`--listen`, multicast, `--admin-socket`, `--metrics`,
//! `--send-threads`), `--media`, fixed against automatic rates, and the fleet itself
//! (`--director`, `--advertise`, `--fleet-key`).

use loopcast_admin::reload::Changes;
use loopcast_proto::rate::format_rate;

use super::{Server, ServerConfig};

/// The running server's settings against the file's, each either live or restart-only.
pub(super) fn changes(old: &ServerConfig, new: &ServerConfig) -> Changes {
    let mut changes = Changes::default();
    let mode = |c: &ServerConfig| {
        if c.adaptive.is_some() {
            "automatic"
        } else {
            "fixed"
        }
    };
    let cap = |rate: u64| {
        if rate == 0 {
            "none".to_owned()
        } else {
            format_rate(rate)
        }
    };
    match (&old.adaptive, &new.adaptive) {
        (Some(was), Some(now)) => {
            changes.live("--rate", cap(old.rate_bits_per_s), cap(new.rate_bits_per_s));
            changes.live("--tier-policy", was.policy, now.policy);
            changes.live("--tiers", was.tiers_max, now.tiers_max);
            changes.live(
                "--initial-rate",
                format_rate(was.initial_rate),
                format_rate(now.initial_rate),
            );
        }
        (None, None) => changes.live(
            "--rate",
            format_rate(old.rate_bits_per_s),
            format_rate(new.rate_bits_per_s),
        ),
        _ => changes.restart("--fixed-rate", mode(old), mode(new)),
    }
    changes.live(
        "--session-timeout",
        format!("{} s", old.session_timeout.as_secs()),
        format!("{} s", new.session_timeout.as_secs()),
    );
    changes.live("--no-verify", !old.verify_on_open, !new.verify_on_open);
    match (&old.fleet, &new.fleet) {
        (Some(was), Some(now)) => {
            changes.live("--location", &was.location, &now.location);
            changes.live(
                "--heartbeat-ms",
                was.interval.as_millis(),
                now.interval.as_millis(),
            );
            changes.restart("--director", list(&was.directors), list(&now.directors));
            changes.restart("--advertise", was.advertise, now.advertise);
            changes.restart("--fleet-key", was.key.fingerprint(), now.key.fingerprint());
        }
        (was, now) => changes.restart(
            "--director",
            was.as_ref().map_or(String::new(), |f| list(&f.directors)),
            now.as_ref().map_or(String::new(), |f| list(&f.directors)),
        ),
    }
    changes.restart("--media", old.media_dir.display(), new.media_dir.display());
    changes.restart("--listen", old.listen, new.listen);
    let multicast = |c: &ServerConfig| {
        c.multicast.as_ref().map_or("off".to_owned(), |m| {
            format!(
                "group {} port {} interface {} ttl {}",
                m.group_base, m.port, m.interface, m.ttl
            )
        })
    };
    changes.restart("multicast", multicast(old), multicast(new));
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map_or("none".to_owned(), |p| p.display().to_string())
    };
    changes.restart(
        "--admin-socket",
        path(&old.admin_socket),
        path(&new.admin_socket),
    );
    let metrics = |c: &ServerConfig| c.metrics.map_or("off".to_owned(), |m| m.to_string());
    changes.restart("--metrics", metrics(old), metrics(new));
    changes.restart("--send-threads", old.send_threads, new.send_threads);
    changes
}

fn list(addresses: &[std::net::SocketAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Server {
    /// SIGHUP: rescan the media database, then read the settings again and apply the live ones.
    /// Nothing here can fail half-way: `load` checked everything before this changes anything.
    pub(super) fn reload(&mut self, reload: &mut loopcast_admin::reload::Reload<ServerConfig>) {
        let now = self.clock.now();
        self.last_rescan = Some(now);
        match self.catalog.rescan() {
            Ok(archives) => tracing::info!(archives, "SIGHUP: media database rescanned"),
            Err(error) => tracing::warn!(%error, "SIGHUP: cannot rescan the media database"),
        }
        // The directors hear of new or removed files with the next heartbeat.
        self.next_catalog_scan = now;
        let Some((new, file)) = reload.load_logged() else {
            return;
        };
        let changes = changes(&self.config, &new);
        if !changes.live.is_empty() {
            if self.config.adaptive.is_some() == new.adaptive.is_some() {
                self.config.rate_bits_per_s = new.rate_bits_per_s;
                self.config.adaptive = new.adaptive.clone();
            }
            self.config.session_timeout = new.session_timeout;
            self.config.verify_on_open = new.verify_on_open;
            self.endpoint.reconfigure(
                now,
                self.config.rate_bits_per_s,
                self.config.adaptive.clone(),
                self.config.session_timeout,
            );
            if let (Some(running), Some(wanted)) = (self.config.fleet.as_mut(), &new.fleet) {
                running.location = wanted.location.clone();
                running.interval = wanted.interval;
                running.rate_bits_per_s_max = wanted.rate_bits_per_s_max;
                if let Some(heartbeat) = self.heartbeat.as_mut() {
                    heartbeat.set_live(running);
                }
            }
            self.flush_endpoint();
            self.send_heartbeat(true);
        }
        changes.log(&file);
    }
}
