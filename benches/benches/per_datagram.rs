//! Per-datagram work that remains in the protocol core, measured with criterion. Each group
//! holds its ceiling, measured in the same run, next to our code:
//! - `verify`: receiver verify+accept vs a plain BLAKE3 of the same datagram (verification
//!   cannot be cheaper than hashing);
//! - `hash_many`: the receiver's BLAKE3 of sixteen equal datagrams at a time, one per SIMD lane
//!   (`hash_lanes`), vs the blake3 crate hashing them one by one, at both MTUs' datagram sizes,
//!   and a short group (which takes the lanes only when that pays);
//! - `header`: loop-datagram header parse and emit (the per-datagram header preparation);
//! - `pacing`: a paced carousel's decision (`poll_transmit` + `poll_timeout`) vs an unpaced one
//!   (no token arithmetic at all);
//! - `repair`: queueing NAKed ranges and handing them out ahead of the loop vs handing out the
//!   same number of loop datagrams.
//!
//! `cargo bench -p loopcast-benches` (add a filter such as `-- repair` for one group). Throughput
//! is reported per datagram. No pass/fail thresholds: figures and ratios go to
//! docs/performance.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use loopcast_proto::assemble::{assemble_in_memory, InMemoryFile};
use loopcast_proto::carousel::{Carousel, CarouselConfig, REPAIR_QUEUE_MAX};
use loopcast_proto::info::{FileInfo, DATAGRAM_SIZE_MTU_1500};
use loopcast_proto::receiver::Receiver;
use loopcast_proto::wire::datagram::{DatagramHeader, FileId};
use loopcast_proto::Instant;

fn datagrams() -> (FileInfo, Vec<Vec<u8>>) {
    let stream: Vec<u8> = (0..8usize << 20).map(|i| (i * 131 % 251) as u8).collect();
    let (info, datagrams) = assemble_in_memory(&InMemoryFile {
        file_id: FileId(1),
        name: "bench.bin",
        datagram_size: DATAGRAM_SIZE_MTU_1500,
        frame_stream: &stream,
        watermark: None,
    });
    (info, datagrams)
}

fn verify(c: &mut Criterion) {
    let (info, datagrams) = datagrams();
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(datagrams.len() as u64));
    group.bench_function("ceiling_blake3", |b| {
        b.iter(|| {
            for datagram in &datagrams {
                black_box(blake3::hash(datagram));
            }
        })
    });
    group.bench_function("receiver_handle_datagram", |b| {
        b.iter_batched(
            || Receiver::new(info.clone()),
            |mut receiver| {
                for datagram in &datagrams {
                    black_box(receiver.handle_datagram(datagram));
                }
                assert!(receiver.is_complete(), "every datagram accepted");
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn hash_many(c: &mut Criterion) {
    use loopcast_dataplane::hash_lanes;
    let mut group = c.benchmark_group("hash_many");
    for (size, count) in [(1440usize, 64usize), (8972, 64), (8972, 4), (8972, 8)] {
        let data: Vec<Vec<u8>> = (0..count)
            .map(|i| (0..size).map(|j| (i * 31 + j * 7) as u8).collect())
            .collect();
        let inputs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut out = vec![[0u8; 32]; count];
        group.throughput(Throughput::Bytes((size * count) as u64));
        group.bench_function(format!("blake3_one_by_one/{size}x{count}"), |b| {
            b.iter(|| {
                for (input, hash) in inputs.iter().zip(out.iter_mut()) {
                    *hash = *blake3::hash(black_box(input)).as_bytes();
                }
            })
        });
        group.bench_function(format!("hash_lanes/{size}x{count}"), |b| {
            b.iter(|| hash_lanes::hash_many(black_box(&inputs), &mut out))
        });
    }
    group.finish();
}

fn header(c: &mut Criterion) {
    let (_, datagrams) = datagrams();
    let mut group = c.benchmark_group("header");
    group.throughput(Throughput::Elements(datagrams.len() as u64));
    group.bench_function("parse", |b| {
        b.iter(|| {
            for datagram in &datagrams {
                black_box(DatagramHeader::parse(datagram).ok());
            }
        })
    });
    let headers: Vec<DatagramHeader> = datagrams
        .iter()
        .map(|d| DatagramHeader::parse(d).expect("assembled datagrams parse"))
        .collect();
    let mut out = [0u8; 64];
    group.bench_function("emit", |b| {
        b.iter(|| {
            for header in &headers {
                header.emit(&mut out);
                black_box(&out);
            }
        })
    });
    group.finish();
}

fn carousel(rate_bits_per_s: u64) -> Carousel {
    Carousel::new(
        CarouselConfig {
            loop_len: 1 << 20,
            datagram_size: DATAGRAM_SIZE_MTU_1500,
            rate_bits_per_s,
            batch_datagrams_max: 44 * 64,
            repair_share_percent: 100,
        },
        Instant::ZERO,
    )
}

/// Drives a carousel on virtual time until `datagrams` have gone out; returns polls made.
fn drain(carousel: &mut Carousel, now: &mut Instant, datagrams: u64) -> u64 {
    let mut sent = 0u64;
    let mut polls = 0u64;
    while sent < datagrams {
        polls += 1;
        match carousel.poll_transmit(*now) {
            Some(t) => sent += u64::from(t.count),
            None => *now = carousel.poll_timeout(),
        }
    }
    polls
}

fn pacing(c: &mut Criterion) {
    const DATAGRAMS: u64 = 100_000;
    let mut group = c.benchmark_group("pacing");
    group.throughput(Throughput::Elements(DATAGRAMS));
    for (name, rate) in [
        ("ceiling_unpaced", 0),
        ("paced_10_mbit", 10_000_000),
        ("paced_10_gbit", 10_000_000_000),
    ] {
        let mut channel = carousel(rate);
        let mut now = Instant::ZERO;
        group.bench_function(name, |b| {
            b.iter(|| black_box(drain(&mut channel, &mut now, DATAGRAMS)))
        });
    }
    group.finish();
}

fn repair(c: &mut Criterion) {
    // A burst of NAKs: REPAIR_QUEUE_MAX scattered ranges of 4 datagrams, each asked twice
    // (the second ask of a range merges), then handed out ahead of the loop.
    let ranges: Vec<(u32, u32)> = (0..REPAIR_QUEUE_MAX as u32)
        .map(|i| ((i * 7919) % ((1 << 20) - 8), 4))
        .collect();
    let datagrams = ranges.iter().map(|&(_, n)| u64::from(n)).sum::<u64>();
    let mut group = c.benchmark_group("repair");
    group.throughput(Throughput::Elements(datagrams));
    group.bench_function("ceiling_loop_datagrams", |b| {
        b.iter_batched(
            || carousel(10_000_000_000),
            |mut channel| {
                let mut now = Instant::ZERO;
                black_box(drain(&mut channel, &mut now, datagrams))
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("queue_and_send_repairs", |b| {
        b.iter_batched(
            || carousel(10_000_000_000),
            |mut channel| {
                for &(first, count) in ranges.iter().chain(ranges.iter()) {
                    channel
                        .queue_repair(first, count, None)
                        .expect("in range, room");
                }
                let mut now = Instant::ZERO;
                let mut sent = 0u64;
                while sent < datagrams {
                    match channel.poll_transmit(now) {
                        Some(t) => {
                            debug_assert!(t.repair);
                            sent += u64::from(t.count);
                        }
                        None => now = channel.poll_timeout(),
                    }
                }
                black_box(sent)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, verify, hash_many, header, pacing, repair);
criterion_main!(benches);
