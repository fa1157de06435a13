//! Attacks on the whole-file check done group by group while receiving (R14) and on the
//! records of checked archives (`.loopcast-verified`).

use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use loopcast_archive::format::datagram_offset;

/// A process that opened `<out>.part` for writing before `get` started (here: between a killed
/// get and its resume) is not seen by the checker's inotify watch (it only sees later opens).
/// It writes over groups the checker already read back; the final check must still find them,
/// and what is published must be exactly the server's archive.
pub fn a_writer_holding_the_part_open_from_before_the_get_cannot_slip_past_the_final_check() {
    let scratch = Scratch::new("check-attack");
    let media = scratch.path("media");
    let input = scratch.path("big.bin");
    write_content(&input, 24 << 20, 11);
    pack_into(&input, &media, &["--level", "0"]);
    let archive = std::fs::read(media.join("big.bin.lca")).unwrap();
    let server = UnicastServer::start(&scratch, &media, &["--rate", "40M"]);
    let port = server.port;
    let output = scratch.path("big.lca");
    let part = scratch.path("big.lca.part");
    let get = || {
        let mut command = Command::new(bin("loopcast"));
        command
            .args(["get", &format!("127.0.0.1:{port}"), "big.bin", "--json"])
            .arg("--output")
            .arg(&output);
        command
    };
    // ~24 MiB at 40 Mbit/s is ~5 s a loop: after 3 s about half is held.
    let mut first = Proc::spawn("first get", &mut get());
    std::thread::sleep(Duration::from_secs(3));
    // Interrupted, so it saves what it holds: the resume then holds every whole group on disk.
    let pid = first.child.id() as i32;
    // SAFETY: a signal to our own child, which is not yet reaped; no memory is passed.
    let sent = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(sent, 0);
    let _ = first.child.wait();
    assert!(part.exists(), "partial archive kept");

    // The attacker's descriptor, opened before the resumed get starts.
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&part)
        .unwrap();
    let second = Proc::spawn("second get", &mut get());
    // Long enough for the checker to read back the groups the resume holds, well before the
    // rest arrives.
    std::thread::sleep(Duration::from_millis(1000));
    // One byte changed in every group the resume holds whole (by the saved state): the
    // checker has read them back by now, and the resumed get never writes them again.
    let server_copy = loopcast_archive::ArchiveFile::open(&media.join("big.bin.lca")).unwrap();
    let info = server_copy.info();
    let saved = std::fs::read(scratch.path("big.lca.part.state")).unwrap();
    let have = loopcast_client::state::decode(&saved, &info.root(), info.loop_len).unwrap();
    let size = usize::from(info.datagram_size);
    let mut written = 0;
    for group in 0..server_copy.group_count() {
        let serials = server_copy.group_serials(group);
        if !have.all_set(serials.clone()) {
            continue;
        }
        let at = datagram_offset(info, serials.end - 1) as usize + size - 100;
        held.write_all_at(&[0x5a ^ archive[at]], at as u64).unwrap();
        written += 1;
    }
    drop(held);
    assert!(written > 10, "{written} groups held whole after the resume");
    let second = second.wait(Duration::from_secs(60));
    drop(server);
    if published_as_the_servers(second, &output, &archive, |differing, report| {
        format!(
            "{differing} bytes differ (of {written} written by the attacker; {} groups checked \
             while receiving): {report}",
            report["groups_checked_while_receiving"]
        )
    })
    .is_none()
    {
        return;
    }
    let verified = Command::new(bin("loopcast"))
        .args(["inspect", "--verify"])
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "inspect --verify: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

/// An archive changed in place while served, with its modification time put back (any owner
/// of the file can set it; `touch -r`, `cp -p`, `rsync --inplace -t` do): the server's
/// once-a-second look at the disk saw size, inode and mtime unchanged and went on looping the
/// changed bytes (its clients dropping them, never finishing) until the re-check ten minutes
/// later. The change time moves whatever the writer does: the channel must stop at once.
pub fn an_archive_changed_in_place_with_its_mtime_put_back_stops_its_channel() {
    let scratch = Scratch::new("check-mtime");
    let media = scratch.path("media");
    let input = scratch.path("disk.bin");
    write_content(&input, 4 << 20, 23);
    pack_into(&input, &media, &["--level", "0"]);
    let archive = media.join("disk.bin.lca");
    let server = UnicastServer::start(&scratch, &media, &["--rate", "8M"]);
    let output = scratch.path("disk.lca");
    let client = Proc::spawn(
        "get",
        Command::new(bin("loopcast"))
            .args(["get", &format!("127.0.0.1:{}", server.port), "disk.bin"])
            .args(["--stall-timeout", "10", "--output"])
            .arg(&output),
    );
    // The server's own check of the archive (4 MiB) is long done by then.
    std::thread::sleep(Duration::from_millis(1500));
    let before = std::fs::metadata(&archive).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&archive)
        .unwrap();
    let at = before.len() * 3 / 4;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x01;
    file.write_all_at(&byte, at).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    assert_eq!(
        std::fs::metadata(&archive).unwrap().modified().unwrap(),
        before.modified().unwrap()
    );
    server.wait_for_counter(
        "archives_changed",
        1,
        Duration::from_millis(2500),
        "the change was not noticed within 2.5 s",
    );
    let got = client.wait(Duration::from_secs(30));
    assert!(
        !got.status.success(),
        "a get of a changed archive cannot succeed"
    );
    assert!(!output.exists(), "nothing unverified is published");
}

/// hx_attack19: another process changes `<out>.part` without ever opening it: truncate(2) by
/// path, cut and then put back to its length, leaves zeros where groups the checker already
/// read back and checked were. No IN_OPEN event (nothing opened), no descriptor for the lease
/// probe, the same inode for `is_at`, the header and the length unchanged: those groups' early
/// checks still count, and the final check must still not publish the zeros.
///
/// To have the tail of the file held and checked while the download still runs, the resumed
/// get lacks a stretch at the front (its level-1 groups zeroed between the two runs, as a disk
/// that lost them would leave them): it starts its loop where the first run stopped, receives
/// the tail, then wraps round for the front. The tail is cut while it fetches the front.
pub fn hx19_a_truncate_by_path_of_checked_groups_cannot_slip_past_the_final_check() {
    let scratch = Scratch::new("check-truncate");
    let media = scratch.path("media");
    let input = scratch.path("big.bin");
    write_content(&input, 24 << 20, 19);
    pack_into(&input, &media, &["--level", "0"]);
    let archive = std::fs::read(media.join("big.bin.lca")).unwrap();
    let server_copy = loopcast_archive::ArchiveFile::open(&media.join("big.bin.lca")).unwrap();
    let info = server_copy.info().clone();
    let size = u64::from(info.datagram_size);
    let server = UnicastServer::start(&scratch, &media, &["--rate", "40M"]);
    let port = server.port;
    let output = scratch.path("big.lca");
    let part = scratch.path("big.lca.part");
    let state = scratch.path("big.lca.part.state");
    let get = || {
        let mut command = Command::new(bin("loopcast"));
        command
            .args(["get", &format!("127.0.0.1:{port}"), "big.bin", "--json"])
            .arg("--output")
            .arg(&output);
        command
    };
    // Which serials are level-1 groups' (the rest: hash blocks above them, read at the end).
    let mut in_group = vec![false; info.loop_len as usize];
    for group in 0..server_copy.group_count() {
        for serial in server_copy.group_serials(group) {
            in_group[serial as usize] = true;
        }
    }
    // The cut: right after the last hash block above the groups.
    let last_above = (0..info.loop_len)
        .rev()
        .find(|&serial| !in_group[serial as usize])
        .unwrap();
    let cut_serial = last_above + 1;
    let cut = datagram_offset(&info, cut_serial);

    // ~24 MiB at 40 Mbit/s is ~5 s a loop: after 3 s about half is held.
    let mut first = Proc::spawn("first get", &mut get());
    std::thread::sleep(Duration::from_secs(3));
    let pid = first.child.id() as i32;
    // SAFETY: a signal to our own child, which is not yet reaped; no memory is passed.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let _ = first.child.wait();
    let saved = std::fs::read(&state).unwrap();
    let have = loopcast_client::state::decode(&saved, &info.root(), info.loop_len).unwrap();
    let held = have.count_ones();
    assert!(
        held > info.loop_len / 4 && held < cut_serial,
        "held {held} of {} before the resume (cut at serial {cut_serial})",
        info.loop_len
    );
    // The front's level-1 groups lost (zeros), before the resumed get starts.
    {
        let file = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
        let front = info.loop_len / 5;
        for serial in 0..front {
            if in_group[serial as usize] {
                file.write_all_at(&vec![0u8; size as usize], datagram_offset(&info, serial))
                    .unwrap();
            }
        }
        file.sync_all().unwrap();
    }

    let second = Proc::spawn("second get", &mut get());
    // Wait (by its saved state, never opening the .part) until the tail is held while the
    // front is not yet.
    let started = std::time::Instant::now();
    let mut truncated = false;
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
        let Ok(saved) = std::fs::read(&state) else {
            continue;
        };
        let Some(have) = loopcast_client::state::decode(&saved, &info.root(), info.loop_len) else {
            continue;
        };
        if !have.all_set(cut_serial..info.loop_len) {
            continue;
        }
        assert!(
            !have.all_set(0..info.loop_len),
            "the front came back before the tail: the attack found no window"
        );
        // The tail is on disk (the state is saved after an fsync); its groups are checked
        // within a scan (50 ms) and a read.
        std::thread::sleep(Duration::from_millis(300));
        let len = archive.len() as i64;
        nix::unistd::truncate(&part, cut as i64).unwrap();
        nix::unistd::truncate(&part, len).unwrap();
        truncated = true;
        break;
    }
    assert!(truncated, "the tail was never held");
    let second = second.wait(Duration::from_secs(60));
    drop(server);
    published_as_the_servers(second, &output, &archive, |differing, report| {
        format!(
            "{differing} bytes differ (the tail from byte {cut} was cut by path and refilled \
             with zeros; {} groups checked while receiving): {report}",
            report["groups_checked_while_receiving"]
        )
    });
}

/// The second get's outcome: a refusal publishes nothing; a success published exactly the
/// server's archive (`why` describes a difference). Its JSON report, if it succeeded.
fn published_as_the_servers(
    second: std::process::Output,
    output: &std::path::Path,
    archive: &[u8],
    why: impl FnOnce(usize, &serde_json::Value) -> String,
) -> Option<serde_json::Value> {
    if !second.status.success() {
        // Refusing to publish is acceptable; publishing damage is not.
        assert!(
            !output.exists(),
            "a failed get published {}",
            output.display()
        );
        return None;
    }
    let report = json_of(&second);
    let published = std::fs::read(output).unwrap();
    let differing = published
        .iter()
        .zip(archive)
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        published.len() == archive.len() && differing == 0,
        "get published an archive that is not the server's: {}",
        why(differing, &report)
    );
    Some(report)
}
