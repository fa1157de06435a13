//! SIGHUP on `loopcastd direct` (issue 11): the config file is read again (the command line
//! still over it). Live: `--heartbeat-misses` (the next expiry check judges by it). Restart
//! only: the sockets made at start (`--listen`, `--heartbeat-listen`, `--admin-socket`,
//! `--metrics`) and `--fleet-key` (the warning names each key by a fingerprint). A file that
//! does not parse or check changes nothing.

use loopcast_admin::reload::Changes;
use loopcast_proto::director::Director;

use crate::{DirectConfig, Reload};

pub(crate) fn apply(running: &mut DirectConfig, director: &mut Director, reload: &mut Reload) {
    let Some((new, file)) = reload.load_logged() else {
        return;
    };
    let changes = changes(running, &new);
    if running.heartbeat_misses != new.heartbeat_misses {
        running.heartbeat_misses = new.heartbeat_misses;
        director.set_heartbeat_misses(new.heartbeat_misses.max(1));
    }
    changes.log(&file);
}

fn changes(old: &DirectConfig, new: &DirectConfig) -> Changes {
    let mut changes = Changes::default();
    changes.live(
        "--heartbeat-misses",
        old.heartbeat_misses,
        new.heartbeat_misses,
    );
    changes.restart("--listen", old.listen, new.listen);
    changes.restart(
        "--fleet-key",
        old.fleet_key.fingerprint(),
        new.fleet_key.fingerprint(),
    );
    let address = |a: Option<std::net::SocketAddr>| a.map_or("none".to_owned(), |a| a.to_string());
    changes.restart(
        "--heartbeat-listen",
        address(old.heartbeat_listen),
        address(new.heartbeat_listen),
    );
    changes.restart(
        "--admin-socket",
        old.admin_socket
            .as_ref()
            .map_or("none".to_owned(), |p| p.display().to_string()),
        new.admin_socket
            .as_ref()
            .map_or("none".to_owned(), |p| p.display().to_string()),
    );
    let metrics = |m: Option<std::net::SocketAddr>| m.map_or("off".to_owned(), |m| m.to_string());
    changes.restart("--metrics", metrics(old.metrics), metrics(new.metrics));
    changes
}
