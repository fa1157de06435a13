//! What an operator installs: the systemd units in packaging/systemd, checked by systemd's own
//! verifier against this build's binary (the units' ExecStart and settings must be valid), and
//! their daemons' command lines run as the units would run them; and the .deb installed in a
//! real systemd (a container booted from this machine's root under a throwaway overlay), its
//! units started there, used and stopped.

use std::process::Command;

use crate::support::{bin, free_udp_port, hang_up, wait_for_admin, Proc, Scratch};

/// The .deb of this build's release binaries (cargo-deb, `--no-build`), at `deb`. One build at
/// a time: cargo-deb strips each binary to a fixed temporary name under target/, so two tests
/// packaging at once read each other's half-written or removed copies (seen in CI:
/// "Unable to read asset ... loopcastctl.stripped-2.tmp").
fn build_deb(deb: &std::path::Path) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = Command::new("cargo")
        .current_dir(&workspace)
        .args([
            "deb",
            "-p",
            "loopcast-tools",
            "--no-build",
            "--strip",
            "--output",
        ])
        .arg(deb)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "cargo deb: {}",
        String::from_utf8_lossy(&built.stderr)
    );
}

fn packaging() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

/// `systemd-analyze verify` finds nothing wrong with either unit (with /usr/bin/loopcastd
/// pointing at this build), and each unit's ExecStart, with the packaged example config
/// pointing at test paths, starts a daemon that answers on its admin socket, and that takes
/// the units' reload (SIGHUP) without stopping.
pub fn systemd_units_verify_and_their_command_lines_start_the_daemons() {
    let scratch = Scratch::new("units");
    let loopcastd = bin("loopcastd");
    for unit in ["loopcastd.service", "loopcastd-direct.service"] {
        let text = std::fs::read_to_string(packaging().join("systemd").join(unit)).unwrap();
        let local = text.replace("/usr/bin/loopcastd", &loopcastd.display().to_string());
        let path = scratch.path(unit);
        std::fs::write(&path, &local).unwrap();
        let output = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && said.trim().is_empty(),
            "{unit}: {said}"
        );
        // The unit's command line, as systemd would run it (config and socket moved here).
        let exec = text
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart="))
            .expect("an ExecStart");
        let mut words: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
        assert_eq!(words[0], "/usr/bin/loopcastd");
        words.remove(0);
        let config = scratch.path(&format!("{unit}.toml"));
        let admin = scratch.path(&format!("{unit}.sock"));
        let media = scratch.path("media");
        std::fs::create_dir_all(&media).unwrap();
        let key = scratch.path("fleet.key");
        if !key.exists() {
            let made = Command::new(&loopcastd)
                .arg("fleet-key")
                .arg(&key)
                .output()
                .unwrap();
            assert!(made.status.success());
        }
        let settings = if unit == "loopcastd.service" {
            format!(
                "media = {:?}\nlisten = \"127.0.0.1:{}\"\nno_multicast = true\nmetrics = \"off\"\n",
                media.display().to_string(),
                free_udp_port()
            )
        } else {
            format!(
                "listen = \"127.0.0.1:{}\"\nfleet_key = {:?}\nmetrics = \"off\"\n",
                free_udp_port(),
                key.display().to_string()
            )
        };
        std::fs::write(&config, settings).unwrap();
        for word in words.iter_mut() {
            if word.starts_with("/etc/loopcast/") {
                *word = config.display().to_string();
            } else if word.starts_with("/run/") {
                *word = admin.display().to_string();
            }
        }
        let mut daemon = Proc::spawn(unit, Command::new(&loopcastd).args(&words));
        wait_for_admin(&admin);
        // `systemctl reload` sends SIGHUP: the daemon reads its config again and stays up.
        assert!(
            text.lines()
                .any(|line| line == "ExecReload=/bin/kill -HUP $MAINPID"),
            "{unit}: no ExecReload"
        );
        hang_up(&daemon);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            daemon.child.try_wait().unwrap().is_none(),
            "{unit}: SIGHUP stopped the daemon"
        );
        wait_for_admin(&admin);
        let output = daemon.terminate();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{unit} exits cleanly on SIGTERM: {log}"
        );
        assert!(
            log.contains("config reloaded: nothing changed"),
            "{unit}: {log}"
        );
    }
}

/// The .deb (`cargo deb -p loopcast-tools --no-build --strip`, from this build): it holds the
/// four binaries, both units, both configs (as conffiles) and maintainer scripts that parse;
/// its binaries run; its serve unit's command line, with its packaged config and this test's
/// overrides on the command line (loopback, no multicast), starts a daemon that answers.
pub fn the_deb_holds_what_an_operator_needs_and_its_daemon_starts() {
    let scratch = Scratch::new("deb");
    let deb = scratch.path("loopcast.deb");
    build_deb(&deb);
    let root = scratch.path("root");
    let extracted = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .output()
        .unwrap();
    assert!(extracted.status.success());
    for path in [
        "usr/bin/loopcast",
        "usr/bin/loopcastd",
        "usr/bin/loopcastctl",
        "usr/bin/loopcast-bench",
        "lib/systemd/system/loopcastd.service",
        "lib/systemd/system/loopcastd-direct.service",
        "etc/loopcast/serve.toml",
        "etc/loopcast/direct.toml",
    ] {
        assert!(root.join(path).is_file(), "{path} in the package");
    }
    let control = scratch.path("control");
    let unpacked = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&control)
        .output()
        .unwrap();
    assert!(unpacked.status.success());
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.contains("/etc/loopcast/serve.toml"),
        "{conffiles}"
    );
    for script in ["postinst", "postrm"] {
        let parsed = Command::new("sh")
            .arg("-n")
            .arg(control.join(script))
            .output()
            .unwrap();
        assert!(parsed.status.success(), "{script} parses");
    }
    let loopcastd = root.join("usr/bin/loopcastd");
    let version = Command::new(&loopcastd).arg("--version").output().unwrap();
    assert!(version.status.success(), "the packaged loopcastd runs");
    // The unit's command line as systemd would run it, from the package's own files.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/loopcastd.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .unwrap();
    let media = scratch.path("media");
    std::fs::create_dir_all(&media).unwrap();
    let admin = scratch.path("admin.sock");
    let args: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|word| {
            if word.starts_with("/etc/") {
                root.join(word.trim_start_matches('/'))
                    .display()
                    .to_string()
            } else if word.starts_with("/run/") {
                admin.display().to_string()
            } else {
                word.to_owned()
            }
        })
        .collect();
    let daemon = Proc::spawn(
        "packaged loopcastd",
        Command::new(&loopcastd)
            .args(&args)
            .args(["--no-multicast", "--metrics", "off", "--listen"])
            .arg(format!("127.0.0.1:{}", free_udp_port()))
            .arg("--media")
            .arg(&media),
    );
    wait_for_admin(&admin);
    let output = daemon.terminate();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The acceptance: "the .deb installs and its units start the daemons". The package is
/// built (cargo-deb), then a container boots this machine's own root read-only under a tmpfs
/// overlay, with systemd as its PID 1 and a private network (its own loopback only), into a
/// target whose one job is packaging/test/inside.sh: `dpkg -i`, the operator's config edits,
/// `systemctl enable --now` of both units, `loopcastctl servers` and `status` on the units'
/// sockets, a `loopcast get` through the director byte-identical, each daemon running as a
/// user of its own (DynamicUser), a clean `systemctl stop`, and `dpkg -r`.
pub fn the_deb_installs_in_a_booted_systemd_and_its_units_serve_a_client() {
    for (program, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("cargo-deb", "cargo install cargo-deb"),
    ] {
        assert!(
            Command::new(program).arg("--version").output().is_ok(),
            "{program} is needed ({package}; .ci/run installs it)"
        );
    }
    let scratch = Scratch::new("deb-systemd");
    let results = scratch.path("results");
    std::fs::create_dir_all(&results).unwrap();
    build_deb(&results.join("loopcast.deb"));
    std::fs::copy(
        packaging().join("test/inside.sh"),
        results.join("inside.sh"),
    )
    .unwrap();
    let boot = Proc::spawn(
        "systemd-nspawn",
        Command::new("unshare")
            .args(["-m", "--propagation", "private"])
            .arg(packaging().join("test/boot-and-install.sh"))
            .arg(&results),
    )
    .wait(std::time::Duration::from_secs(200));
    let log = std::fs::read_to_string(results.join("inside.log")).unwrap_or_default();
    let result = std::fs::read_to_string(results.join("result")).unwrap_or_default();
    assert_eq!(
        result.trim(),
        "PASS",
        "inside the container:\n{log}\nnspawn: {}",
        String::from_utf8_lossy(&boot.stderr)
    );
    assert!(log.contains("user loopcastd"), "{log}");
}
