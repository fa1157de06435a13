//! Per-datagram costs of the protocol core, each with a ceiling from the same run:
//! - receiver verify+accept vs plain BLAKE3 of the same datagrams (verification cannot be
//!   cheaper than hashing);
//! - datagram header parse;
//! - carousel pacing decision (paced poll_transmit + poll_timeout).
//!
//! `cargo bench -p loopcast-benches` (prints ns per datagram; no pass/fail thresholds here).

use std::hint::black_box;
use std::time::{Duration, Instant};

use loopcast_proto::assemble::{assemble_in_memory, InMemoryFile};
use loopcast_proto::carousel::{Carousel, CarouselConfig, SessionId};
use loopcast_proto::info::DATAGRAM_SIZE_MTU_1500;
use loopcast_proto::receiver::Receiver;
use loopcast_proto::wire::datagram::{DatagramHeader, FileId};

fn per_item(elapsed: Duration, items: usize) -> f64 {
    elapsed.as_nanos() as f64 / items as f64
}

fn main() {
    let stream: Vec<u8> = (0..32usize << 20).map(|i| (i * 131 % 251) as u8).collect();
    let (info, datagrams) = assemble_in_memory(&InMemoryFile {
        file_id: FileId(1),
        name: "bench.bin",
        datagram_size: DATAGRAM_SIZE_MTU_1500,
        frame_stream: &stream,
        watermark: None,
    });
    let count = datagrams.len();

    let started = Instant::now();
    for datagram in &datagrams {
        black_box(blake3::hash(datagram));
    }
    let hash_ns = per_item(started.elapsed(), count);

    let mut receiver = Receiver::new(info.clone());
    let started = Instant::now();
    for datagram in &datagrams {
        black_box(receiver.handle_datagram(datagram));
    }
    let receive_ns = per_item(started.elapsed(), count);
    assert!(receiver.is_complete(), "every datagram accepted");

    let started = Instant::now();
    for datagram in &datagrams {
        black_box(DatagramHeader::parse(datagram).ok());
    }
    let parse_ns = per_item(started.elapsed(), count);

    let mut carousel = Carousel::new(
        CarouselConfig {
            loop_len: info.loop_len,
            datagram_size: info.datagram_size,
            rate_bits_per_s: 10_000_000_000,
            batch_datagrams_max: 2816,
            member_timeout: Duration::from_secs(3600),
            members_max: 4,
        },
        loopcast_proto::Instant::ZERO,
    );
    carousel
        .join(loopcast_proto::Instant::ZERO, SessionId(1))
        .expect("room");
    let mut now = loopcast_proto::Instant::ZERO;
    let mut transmitted = 0u64;
    let polls = 1_000_000usize;
    let started = Instant::now();
    for _ in 0..polls {
        match carousel.poll_transmit(now) {
            Some(t) => transmitted += u64::from(t.count),
            None => now = carousel.poll_timeout().expect("member present"),
        }
    }
    let pacing_ns = per_item(started.elapsed(), polls);
    black_box(transmitted);

    println!("datagrams: {count} x {} bytes", info.datagram_size);
    println!("ceiling  blake3 per datagram          {hash_ns:>8.1} ns");
    println!(
        "receiver verify+accept per datagram   {receive_ns:>8.1} ns  ({:.2}x the hash ceiling)",
        receive_ns / hash_ns
    );
    println!("header parse per datagram             {parse_ns:>8.1} ns");
    println!(
        "carousel paced poll (per call)        {pacing_ns:>8.1} ns  ({:.2} datagrams per call)",
        transmitted as f64 / polls as f64
    );
}
