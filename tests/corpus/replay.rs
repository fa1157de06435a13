//! The attack corpus (tests/corpus/README.md): every committed file goes through every parser.
//! No parser may panic on any of them, and the parser each file was written for must give the
//! verdict the MANIFEST records ("drop" or "parse"), so a change of behaviour is noticed.
//!
//! `LOOPCAST_WRITE_CORPUS=1 cargo test --release -p loopcast-tools --test corpus` rewrites the
//! files and the MANIFEST from `attack_packets` below; review the diff before committing it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loopcast_archive::format::parse_superblock;
use loopcast_archive::frame::{FrameHeader, FRAME_HEADER_LEN};
use loopcast_proto::carousel::SessionId;
use loopcast_proto::info::{FileInfo, RootHash, DATAGRAM_SIZE_MTU_1500, NAME_LEN_MAX};
use loopcast_proto::testkit::sample_info;
use loopcast_proto::wire::control::{ControlMessage, Transport, NAK_RANGES_MAX};
use loopcast_proto::wire::datagram::{
    DatagramHeader, DatagramKind, FileId, Serial, DATAGRAM_HEADER_LEN,
};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

/// The parser a corpus directory is written for.
#[derive(Clone, Copy, Debug)]
enum Parser {
    Control,
    Datagram,
    Info,
}

impl Parser {
    fn of_dir(dir: &str) -> Parser {
        match dir {
            "control" => Parser::Control,
            "datagram" => Parser::Datagram,
            "info" => Parser::Info,
            other => panic!("corpus directory {other} has no parser"),
        }
    }

    fn verdict(self, bytes: &[u8]) -> &'static str {
        let parsed = match self {
            Parser::Control => ControlMessage::parse(bytes).is_ok(),
            Parser::Datagram => DatagramHeader::parse(bytes).is_ok(),
            Parser::Info => FileInfo::parse(bytes).is_ok(),
        };
        if parsed {
            "parse"
        } else {
            "drop"
        }
    }
}

/// Runs `bytes` through every parser loopcast has (their verdicts are not asserted here: only
/// that none panics, which the test harness reports with the file's name).
fn through_every_parser(bytes: &[u8]) {
    let _ = ControlMessage::parse(bytes);
    let _ = DatagramHeader::parse(bytes);
    let _ = FileInfo::parse(bytes);
    let _ = parse_superblock(bytes);
    let mut window = [0u8; FRAME_HEADER_LEN];
    let len = bytes.len().min(FRAME_HEADER_LEN);
    window[..len].copy_from_slice(&bytes[..len]);
    let _ = FrameHeader::parse(&window);
    let _ = loopcast_client::state::decode(bytes, &RootHash([0; 32]), 1000);
    if bytes.len() >= 78 {
        // A state file names its root and loop length: try the ones it claims.
        let mut root = [0u8; 32];
        root.copy_from_slice(&bytes[6..38]);
        let loop_len = u32::from_be_bytes(bytes[38..42].try_into().expect("4 bytes"));
        let _ = loopcast_client::state::decode(bytes, &RootHash(root), loop_len);
    }
}

fn read_manifest() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(corpus_dir().join("MANIFEST")).expect("MANIFEST exists");
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next().expect("a name").to_owned();
            let verdict = fields
                .next()
                .unwrap_or_else(|| panic!("{name}: no verdict"));
            assert!(
                verdict == "drop" || verdict == "parse",
                "{name}: verdict {verdict}"
            );
            (name, verdict.to_owned())
        })
        .collect()
}

#[test]
fn every_attack_packet_gets_its_recorded_verdict_and_no_parser_panics() {
    if std::env::var_os("LOOPCAST_WRITE_CORPUS").is_some() {
        write_corpus();
    }
    let manifest = read_manifest();
    let mut on_disk = Vec::new();
    for dir in ["control", "datagram", "info"] {
        for entry in std::fs::read_dir(corpus_dir().join(dir)).expect("corpus directory") {
            let entry = entry.unwrap();
            on_disk.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
        }
    }
    on_disk.sort();
    let listed: Vec<String> = manifest.keys().cloned().collect();
    assert_eq!(on_disk, listed, "MANIFEST and the corpus files disagree");
    assert!(listed.len() >= 50, "the corpus has {} files", listed.len());

    let mut wrong = Vec::new();
    for (name, expected) in &manifest {
        let bytes = std::fs::read(corpus_dir().join(name)).unwrap();
        let started = Instant::now();
        through_every_parser(&bytes);
        // A parser that is slow on one packet is a denial of service (the huge-counts Offer took
        // seconds before issue 9): every packet goes through all of them in well under this.
        let elapsed = started.elapsed();
        if elapsed > Duration::from_millis(250) {
            wrong.push(format!("{name}: the parsers took {elapsed:?}"));
        }
        let dir = name.split('/').next().expect("dir/name");
        let verdict = Parser::of_dir(dir).verdict(&bytes);
        if verdict != expected {
            wrong.push(format!("{name}: expected {expected}, got {verdict}"));
        }
    }
    assert!(wrong.is_empty(), "verdicts changed:\n{}", wrong.join("\n"));
}

/// Rewrites the corpus and the MANIFEST from `attack_packets`.
fn write_corpus() {
    let root = corpus_dir();
    for dir in ["control", "datagram", "info"] {
        let _ = std::fs::remove_dir_all(root.join(dir));
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let mut manifest = String::from(
        "# Attack corpus: file -> verdict of the parser its directory is for (control:\n\
         # ControlMessage::parse, datagram: DatagramHeader::parse, info: FileInfo::parse).\n\
         # Written by `LOOPCAST_WRITE_CORPUS=1 cargo test --release -p loopcast-tools --test corpus`.\n",
    );
    let mut packets = attack_packets();
    packets.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, bytes, verdict) in packets {
        std::fs::write(root.join(&name), &bytes).unwrap();
        manifest.push_str(&format!("{name} {verdict}\n"));
    }
    std::fs::write(root.join("MANIFEST"), manifest).unwrap();
}

fn request(name: &str) -> Vec<u8> {
    ControlMessage::Request {
        request_id: 0x0102_0304_0506_0708,
        multicast_ok: true,
        name: name.into(),
        hints: Default::default(),
    }
    .to_bytes()
}

/// A NAK body with `count` in the count byte and the given ranges (not checked).
fn nak_raw(kind: u8, count: u8, ranges: &[(u32, u32)]) -> Vec<u8> {
    let mut bytes = vec![b'L', b'c', 1, kind];
    bytes.extend_from_slice(&0xdead_beef_u64.to_be_bytes());
    bytes.push(count);
    for &(first, length) in ranges {
        bytes.extend_from_slice(&first.to_be_bytes());
        bytes.extend_from_slice(&length.to_be_bytes());
    }
    bytes
}

fn offer(info_bytes: &[u8]) -> Vec<u8> {
    let valid = ControlMessage::Offer {
        request_id: 7,
        session: SessionId(0x5e55_1011),
        token: loopcast_proto::wire::control::Token(0x70c3),
        transport: Transport::Unicast,
        channel: "127.0.0.1:7701".parse().unwrap(),
        rate_bits_per_s: 100_000_000,
        info: sample_info(1_000_000, DATAGRAM_SIZE_MTU_1500, 6),
    }
    .to_bytes();
    // Offer: magic 2, version 1, kind 1, request 8, session 8, token 8, transport 1, address 7,
    // rate 8, info_len 2, info: the fixed part is 46 bytes.
    let mut bytes = valid[..44].to_vec();
    bytes.extend_from_slice(&(info_bytes.len() as u16).to_be_bytes());
    bytes.extend_from_slice(info_bytes);
    bytes
}

/// An info whose counts agree with each other but describe billions of datagrams: cheap to
/// send, and (before the fix of issue 9) expensive to parse.
fn huge_info() -> Vec<u8> {
    loopcast_proto::testkit::huge_consistent_info().to_bytes()
}

fn datagram(header: DatagramHeader, len: usize) -> Vec<u8> {
    let mut bytes = vec![0xa5; len];
    header.emit(&mut bytes);
    bytes
}

/// A valid data datagram header in a 1440-byte datagram.
fn data_header() -> DatagramHeader {
    DatagramHeader {
        kind: DatagramKind::Data,
        file_id: FileId(0x1122_3344_5566_7706),
        serial: Serial(5),
        level: 0,
        index: 4,
        payload_len: 1408,
        loop_len: 800,
    }
}

/// Sets the big-endian integer at `at` (width from the value's type) in a copy of `bytes`.
fn with(bytes: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at..at + value.len()].copy_from_slice(value);
    out
}

/// Every attack packet: (path under tests/corpus, bytes, verdict of its directory's parser).
fn attack_packets() -> Vec<(String, Vec<u8>, &'static str)> {
    let mut all: Vec<(String, Vec<u8>, &'static str)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, verdict: &'static str| {
        all.push((name.to_owned(), bytes, verdict));
    };

    // Control messages.
    let valid_request = request("film.mkv");
    add("control/empty.bin", Vec::new(), "drop");
    add("control/one-byte.bin", vec![b'L'], "drop");
    add("control/magic-only.bin", b"Lc".to_vec(), "drop");
    add(
        "control/wrong-magic.bin",
        with(&valid_request, 0, b"LC"),
        "drop",
    );
    add(
        "control/version-0.bin",
        with(&valid_request, 2, &[0]),
        "drop",
    );
    add(
        "control/version-2.bin",
        with(&valid_request, 2, &[2]),
        "drop",
    );
    add("control/kind-0.bin", with(&valid_request, 3, &[0]), "drop");
    add(
        "control/kind-255.bin",
        with(&valid_request, 3, &[255]),
        "drop",
    );
    add("control/request-valid.bin", valid_request.clone(), "parse");
    // The Request's body ends after its name; the zero padding after it may be cut freely.
    let body_len = 14 + usize::from(valid_request[13]);
    for cut in [4, 8, 12, 13, 14, body_len - 1] {
        add(
            &format!("control/request-truncated-at-{cut}.bin"),
            valid_request[..cut].to_vec(),
            "drop",
        );
    }
    add(
        "control/request-trailing-byte.bin",
        // Padding must be zeros: a non-zero byte after it is malformed.
        [valid_request.as_slice(), &[1]].concat(),
        "drop",
    );
    add(
        "control/request-multicast-flag-2.bin",
        with(&valid_request, 12, &[2]),
        "drop",
    );
    add(
        "control/request-name-128.bin",
        request(&"n".repeat(NAME_LEN_MAX)),
        "parse",
    );
    for len in [NAME_LEN_MAX + 1, 200, 255] {
        let mut oversize = request("");
        oversize[13] = len as u8;
        oversize.extend_from_slice(&vec![b'n'; len]);
        add(&format!("control/request-name-{len}.bin"), oversize, "drop");
    }
    add(
        "control/request-name-length-beyond-packet.bin",
        // Unpadded (a Request's zero padding would otherwise be read as the name).
        with(&request("short")[..19], 13, &[100]),
        "drop",
    );
    add(
        "control/request-name-not-utf8.bin",
        with(&request("ab"), 14, &[0xff, 0xfe]),
        "drop",
    );

    add("control/nak-count-0.bin", nak_raw(8, 0, &[]), "drop");
    add(
        "control/nak-count-1.bin",
        nak_raw(8, 1, &[(10, 5)]),
        "parse",
    );
    let max_ranges: Vec<(u32, u32)> = (0..NAK_RANGES_MAX as u32).map(|i| (i * 10, 3)).collect();
    add(
        "control/nak-count-64.bin",
        nak_raw(8, 64, &max_ranges),
        "parse",
    );
    let too_many: Vec<(u32, u32)> = (0..65).map(|i| (i * 10, 3)).collect();
    add(
        "control/nak-count-65.bin",
        nak_raw(8, 65, &too_many),
        "drop",
    );
    add(
        "control/nak-count-255-with-1-range.bin",
        nak_raw(8, 255, &[(1, 1)]),
        "drop",
    );
    add(
        "control/nak-count-64-with-1-range.bin",
        nak_raw(8, 64, &[(1, 1)]),
        "drop",
    );
    add(
        "control/nak-range-overflowing.bin",
        nak_raw(8, 1, &[(u32::MAX - 1, 2)]),
        "drop",
    );
    add(
        "control/nak-range-whole-space.bin",
        nak_raw(8, 1, &[(0, u32::MAX)]),
        "parse",
    );
    add(
        "control/nak-range-empty.bin",
        nak_raw(8, 2, &[(5, 1), (9, 0)]),
        "drop",
    );
    add("control/nakheard-count-0.bin", nak_raw(9, 0, &[]), "drop");
    add(
        "control/nakheard-range-overflowing.bin",
        nak_raw(9, 1, &[(u32::MAX, 1)]),
        "drop",
    );

    let info = sample_info(1_000_000, DATAGRAM_SIZE_MTU_1500, 6).to_bytes();
    add("control/offer-valid.bin", offer(&info), "parse");
    let mut noise_state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..300)
        .map(|_| {
            noise_state ^= noise_state << 13;
            noise_state ^= noise_state >> 7;
            noise_state ^= noise_state << 17;
            noise_state as u8
        })
        .collect();
    add("control/offer-garbage-info.bin", offer(&noise), "drop");
    add(
        "control/offer-garbage-after-info-magic.bin",
        offer(&[&info[..6], &noise[..]].concat()),
        "drop",
    );
    add("control/offer-empty-info.bin", offer(&[]), "drop");
    add(
        "control/offer-info-huge-consistent-counts.bin",
        offer(&huge_info()),
        "drop",
    );
    let mut short_claim = offer(&info);
    let at = 44;
    short_claim[at..at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
    add("control/offer-info-len-65535.bin", short_claim, "drop");
    add(
        "control/offer-address-family-5.bin",
        with(&offer(&info), 29, &[5]),
        "drop",
    );
    add(
        "control/offer-transport-0.bin",
        with(&offer(&info), 28, &[0]),
        "drop",
    );

    let status = ControlMessage::Status {
        session: SessionId(0x0bad_5e55_1017),
        held: 10,
        loop_len: 800,
        done: false,
    }
    .to_bytes();
    add("control/status-random-session.bin", status.clone(), "parse");
    add(
        "control/status-held-beyond-loop.bin",
        ControlMessage::Status {
            session: SessionId(u64::MAX),
            held: u32::MAX,
            loop_len: 1,
            done: true,
        }
        .to_bytes(),
        "parse",
    );
    add(
        "control/status-done-2.bin",
        with(&status, status.len() - 1, &[2]),
        "drop",
    );
    add(
        "control/status-truncated.bin",
        status[..status.len() - 1].to_vec(),
        "drop",
    );
    // Receiver reports (R12): absurd counts parse (the server clamps them); a cut or padded
    // Report, and a Feedback naming a tier past the count, do not.
    let report = ControlMessage::Report {
        session: SessionId(0x5eed),
        sent_at_us: 1,
        interval_us: 200_000,
        received: 100,
        lost: 0,
        rtt_us: 500,
        loss_judged: true,
    }
    .to_bytes();
    add("control/report-random-session.bin", report.clone(), "parse");
    add(
        "control/report-absurd-counts.bin",
        ControlMessage::Report {
            session: SessionId(1),
            sent_at_us: u32::MAX,
            interval_us: 0,
            received: u32::MAX,
            lost: u32::MAX,
            rtt_us: u32::MAX,
            loss_judged: true,
        }
        .to_bytes(),
        "parse",
    );
    add(
        "control/report-truncated.bin",
        report[..report.len() - 1].to_vec(),
        "drop",
    );
    let mut padded = report.clone();
    padded.push(0);
    add("control/report-trailing-byte.bin", padded, "drop");
    // The loss-judged byte is 0 or 1.
    add(
        "control/report-judged-2.bin",
        with(&report, report.len() - 1, &[2]),
        "drop",
    );
    let feedback = ControlMessage::Feedback {
        session: SessionId(2),
        echo_us: 3,
        tier_id: 4,
        tier: 0,
        tiers: 2,
        transport: Transport::Multicast,
        channel: "239.77.1.9:7701".parse().unwrap(),
        rate_bits_per_s: 50_000_000,
    }
    .to_bytes();
    add("control/feedback-valid.bin", feedback.clone(), "parse");
    // tier (offset 4 + 8 + 4 + 4) at or past tiers.
    add(
        "control/feedback-tier-past-count.bin",
        with(&feedback, 20, &[2, 2]),
        "drop",
    );
    add(
        "control/feedback-zero-tiers.bin",
        with(&feedback, 20, &[0, 0]),
        "drop",
    );
    add(
        "control/feedback-transport-9.bin",
        with(&feedback, 22, &[9]),
        "drop",
    );
    add(
        "control/leave-random-session.bin",
        ControlMessage::Leave {
            session: SessionId(0x1234_5678),
        }
        .to_bytes(),
        "parse",
    );
    let joined = ControlMessage::Joined {
        session: SessionId(42),
        token: loopcast_proto::wire::control::Token(43),
        transport: Transport::Multicast,
    }
    .to_bytes();
    add(
        "control/joined-transport-3.bin",
        with(&joined, 20, &[3]),
        "drop",
    );
    let sync = ControlMessage::Sync {
        file_id: FileId(9),
        sequence: 1,
    }
    .to_bytes();
    add("control/sync-truncated.bin", sync[..10].to_vec(), "drop");
    let sync_wanted = ControlMessage::SyncWanted {
        session: SessionId(42),
        token: loopcast_proto::wire::control::Token(43),
    }
    .to_bytes();
    add("control/sync-wanted.bin", sync_wanted.clone(), "parse");
    add(
        "control/sync-wanted-truncated.bin",
        sync_wanted[..sync_wanted.len() - 1].to_vec(),
        "drop",
    );
    let mut sync_wanted_long = sync_wanted;
    sync_wanted_long.push(0);
    add(
        "control/sync-wanted-trailing-byte.bin",
        sync_wanted_long,
        "drop",
    );
    let mut reject = vec![b'L', b'c', 1, 3];
    reject.extend_from_slice(&1u64.to_be_bytes());
    reject.push(1);
    reject.push(201);
    reject.extend_from_slice(&[b'x'; 201]);
    add("control/reject-message-201.bin", reject, "drop");
    let mut big = valid_request.clone();
    big.resize(65_536, 0);
    add("control/request-64kib.bin", big, "drop");
    add("control/zeros-64kib.bin", vec![0; 65_536], "drop");
    add(
        "control/datagram-on-control-port.bin",
        datagram(data_header(), 1440),
        "drop",
    );

    // Loop datagram headers.
    let valid = datagram(data_header(), 1440);
    add("datagram/empty.bin", Vec::new(), "drop");
    add("datagram/valid.bin", valid.clone(), "parse");
    add("datagram/header-31-bytes.bin", valid[..31].to_vec(), "drop");
    add("datagram/wrong-magic.bin", with(&valid, 0, b"Lc"), "drop");
    add("datagram/version-0.bin", with(&valid, 2, &[0]), "drop");
    add("datagram/version-2.bin", with(&valid, 2, &[2]), "drop");
    add("datagram/kind-0.bin", with(&valid, 3, &[0]), "drop");
    add("datagram/kind-3.bin", with(&valid, 3, &[3]), "drop");
    add(
        "datagram/data-at-level-1.bin",
        with(&valid, 16, &[1]),
        "drop",
    );
    let block = with(&valid, 3, &[2]);
    add("datagram/hash-block-at-level-0.bin", block.clone(), "drop");
    add(
        "datagram/hash-block-at-level-255.bin",
        with(&block, 16, &[255]),
        "parse",
    );
    add(
        "datagram/reserved-byte-set.bin",
        with(&valid, 17, &[1]),
        "drop",
    );
    add(
        "datagram/reserved-tail-set.bin",
        with(&valid, 31, &[1]),
        "drop",
    );
    add(
        "datagram/payload-len-65535.bin",
        with(&valid, 18, &u16::MAX.to_be_bytes()),
        "drop",
    );
    add(
        "datagram/payload-len-one-past-buffer.bin",
        with(&valid, 18, &1409u16.to_be_bytes()),
        "drop",
    );
    add(
        "datagram/serial-equals-loop-len.bin",
        with(&valid, 12, &800u32.to_be_bytes()),
        "drop",
    );
    add(
        "datagram/serial-max.bin",
        with(
            &with(&valid, 12, &u32::MAX.to_be_bytes()),
            24,
            &u32::MAX.to_be_bytes(),
        ),
        "drop",
    );
    add(
        "datagram/serial-max-minus-one-of-max-loop.bin",
        with(
            &with(&valid, 12, &(u32::MAX - 1).to_be_bytes()),
            24,
            &u32::MAX.to_be_bytes(),
        ),
        "parse",
    );
    add(
        "datagram/loop-len-0.bin",
        with(&with(&valid, 12, &[0; 4]), 24, &[0; 4]),
        "drop",
    );
    add(
        "datagram/index-max.bin",
        with(&valid, 20, &u32::MAX.to_be_bytes()),
        "parse",
    );
    add("datagram/zeros-64kib.bin", vec![0; 65_536], "drop");
    let mut jumbo = data_header();
    jumbo.payload_len = u16::MAX;
    add(
        "datagram/64kib-with-largest-payload.bin",
        datagram(jumbo, DATAGRAM_HEADER_LEN + usize::from(u16::MAX)),
        "parse",
    );
    add(
        "datagram/64kib-payload-len-past-end.bin",
        datagram(jumbo, 65_536)[..65_535].to_vec(),
        "drop",
    );
    add("datagram/control-message.bin", request("film.mkv"), "drop");

    // File info records (as in an Offer or an archive's first page).
    add("info/valid.bin", info.clone(), "parse");
    add("info/empty.bin", Vec::new(), "drop");
    add("info/huge-consistent-counts.bin", huge_info(), "drop");
    add(
        "info/version-2.bin",
        with(&info, 4, &2u16.to_be_bytes()),
        "drop",
    );
    add(
        "info/unknown-flag.bin",
        with(&info, 14, &0x8000_0000u32.to_be_bytes()),
        "drop",
    );
    add(
        "info/datagram-size-255.bin",
        with(&info, 78, &255u16.to_be_bytes()),
        "drop",
    );
    add(
        "info/loop-len-off-by-one.bin",
        {
            let loop_len = u32::from_be_bytes(info[84..88].try_into().unwrap());
            with(&info, 84, &(loop_len + 1).to_be_bytes())
        },
        "drop",
    );
    add("info/data-count-0.bin", with(&info, 80, &[0; 4]), "drop");
    add(
        "info/trailing-byte.bin",
        [info.as_slice(), &[0]].concat(),
        "drop",
    );
    let top_count = FileInfo::parse(&info).unwrap().top_hashes.len();
    add(
        "info/top-hash-missing.bin",
        info[..info.len() - 32].to_vec(),
        "drop",
    );
    add(
        "info/top-count-one-short-of-the-tree.bin",
        {
            let mut short = info[..info.len() - 32].to_vec();
            let count_at = info.len() - 32 * top_count - 1;
            short[count_at] = (top_count - 1) as u8;
            short
        },
        "drop",
    );
    all
}
