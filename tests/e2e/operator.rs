//! What an operator meeting the fleet for the first time runs into (issue 11 review): a
//! reload must not hide a change it does not apply.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

fn hang_up(daemon: &Proc) {
    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

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
    let director_port = free_udp_port();
    let director_admin = scratch.path("director.sock");
    let director_config = scratch.path("direct.toml");
    let director_settings = |key: &std::path::Path| {
        format!(
            "listen = \"127.0.0.1:{director_port}\"\nheartbeat_listen = \"off\"\nfleet_key = {:?}\nadmin_socket = {:?}\nmetrics = \"off\"\n",
            key.display().to_string(),
            director_admin.display().to_string()
        )
    };
    std::fs::write(&director_config, director_settings(&key)).unwrap();
    let director = Proc::spawn(
        "loopcastd direct",
        Command::new(bin("loopcastd"))
            .args(["direct", "--config"])
            .arg(&director_config),
    );
    wait_for_admin(&director_admin);
    let server_admin = scratch.path("server.sock");
    let server_config = scratch.path("serve.toml");
    let server_port = free_udp_port();
    let server_settings = |key: &std::path::Path| {
        format!(
            "media = {:?}\nlisten = \"127.0.0.1:{server_port}\"\nno_multicast = true\nadmin_socket = {:?}\nmetrics = \"off\"\ndirector = [\"127.0.0.1:{director_port}\"]\nfleet_key = {:?}\n",
            media.display().to_string(),
            server_admin.display().to_string(),
            key.display().to_string()
        )
    };
    std::fs::write(&server_config, server_settings(&key)).unwrap();
    let server = Proc::spawn(
        "loopcastd serve",
        Command::new(bin("loopcastd"))
            .args(["serve", "--config"])
            .arg(&server_config),
    );
    wait_for_admin(&server_admin);
    std::fs::write(&server_config, server_settings(&new_key)).unwrap();
    std::fs::write(&director_config, director_settings(&new_key)).unwrap();
    hang_up(&server);
    hang_up(&director);
    // A reload is taken within 100 ms of the signal.
    std::thread::sleep(Duration::from_millis(600));
    for (name, daemon) in [("server", server), ("director", director)] {
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
