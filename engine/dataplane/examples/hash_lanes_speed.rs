//! Quick throughput check of `hash_lanes::hash_many` vs `blake3::hash` per datagram (one core).
//! The datagram size is the first argument (default 1440; 8944 is a jumbo frame's). The ceiling
//! is `blake3::hash` of the same bytes as one input, which puts a chunk in every SIMD lane.
fn main() {
    let size: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1440);
    let count = 288_000_000 / size;
    let data: Vec<u8> = (0..size * count).map(|i| (i * 13) as u8).collect();
    let inputs: Vec<&[u8]> = data.chunks_exact(size).collect();
    let mut out = vec![[0u8; 32]; count];
    for _ in 0..5 {
        let t = std::time::Instant::now();
        for (i, o) in inputs.iter().zip(out.iter_mut()) {
            *o = *blake3::hash(i).as_bytes();
        }
        let single = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        for (ins, outs) in inputs.chunks(16).zip(out.chunks_mut(16)) {
            loopcast_dataplane::hash_lanes::hash_many(ins, outs);
        }
        let lanes = t.elapsed().as_secs_f64();
        // The ceiling: BLAKE3 of all the bytes as one input, every SIMD lane a chunk of it.
        let t = std::time::Instant::now();
        std::hint::black_box(blake3::hash(&data));
        let whole = t.elapsed().as_secs_f64();
        let gb = (size * count) as f64 / 1e9;
        println!(
            "single {:.2} GB/s, lanes {:.2} GB/s, one input of them all (ceiling) {:.2} GB/s: lanes {:.2} of it",
            gb / single,
            gb / lanes,
            gb / whole,
            whole / lanes
        );
    }
}
