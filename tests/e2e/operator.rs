//! What an operator meeting the fleet for the first time runs into (issue 11 review): a
//! reload must not hide a change it does not apply.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// A server's and a director's files name a new fleet key, then SIGHUP: the key cannot change
/// live, so each log warns that it waits for a restart (and neither says "nothing changed",
/// which would let the operator believe the fleet is on the new key).
pub fn sighup_with_a_new_fleet_key_warns_it_waits_for_a_restart() {
    let scratch = Scratch::new("sighup-key");
    let key = scratch.path("fleet.key");
    let new_key = scratch.path("new.key");
    run_ok(Command::new(bin("loopcastd")).arg("fleet-key").arg(&key));
    run_ok(
        Command::new(bin("loopcastd"))
            .arg("fleet-key")
            .arg(&new_key),
    );
    let media = scratch.path("media");
    std::fs::create_dir_all(&media).unwrap();
    let key_line = |key: &std::path::Path| format!("fleet_key = {:?}\n", key.display().to_string());
    let fleet = ConfiguredFleet::start(&scratch, &media, &key_line(&key), &key_line(&key));
    fleet.reload_with(&key_line(&new_key), &key_line(&new_key));
    // A reload is taken within 100 ms of the signal.
    std::thread::sleep(Duration::from_millis(600));
    for (name, daemon) in [("server", fleet.server), ("director", fleet.director)] {
        let output = daemon.terminate();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            log.contains("config: --fleet-key changed")
                && log.contains("takes effect only after a restart")
                && !log.contains("config reloaded: nothing changed"),
            "the {name}'s log after SIGHUP with a new fleet key:\n{log}"
        );
    }
}
