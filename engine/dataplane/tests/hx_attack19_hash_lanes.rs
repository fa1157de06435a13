//! hx_attack19: attacks on `hash_lanes::hash_many` (AVX-512 intrinsics, inputs of up to 16
//! chunks through the lanes, BLAKE3's tree per lane). Every case is compared with
//! `blake3::hash`, input by input. Inputs are carved so that they end (or start) exactly at a
//! page that cannot be read: any read past either end of a slice in the unsafe loads faults
//! instead of passing unnoticed. Deterministic: every random choice comes from a seeded
//! `SeededRng`.

use loopcast_dataplane::hash_lanes::{hash_many, LANE_INPUT_LEN_MAX};
use loopcast_proto::rng::SeededRng;

const LANES: usize = 16;
const PAGE: usize = 4096;

fn expected(inputs: &[&[u8]]) -> Vec<[u8; 32]> {
    inputs.iter().map(|i| *blake3::hash(i).as_bytes()).collect()
}

fn check(inputs: &[&[u8]], what: &str) {
    let mut out = vec![[0xa5u8; 32]; inputs.len()];
    hash_many(inputs, &mut out);
    let want = expected(inputs);
    for (index, (got, want)) in out.iter().zip(&want).enumerate() {
        assert_eq!(
            got,
            want,
            "{what}: input {index} of {} (length {}; lengths {:?})",
            inputs.len(),
            inputs[index].len(),
            inputs.iter().map(|i| i.len()).collect::<Vec<_>>()
        );
    }
}

fn fill(rng: &mut SeededRng, bytes: &mut [u8]) {
    for chunk in bytes.chunks_mut(8) {
        let word = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// A readable region with an unreadable page right before it and right after it.
struct Guarded {
    base: *mut u8,
    total: usize,
    data: *mut u8,
    len: usize,
}

impl Guarded {
    fn new(len: usize, rng: &mut SeededRng) -> Guarded {
        let data_pages = len.div_ceil(PAGE).max(1);
        let total = (data_pages + 2) * PAGE;
        // SAFETY: a fresh anonymous private mapping; no memory of ours is passed.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        let base = base.cast::<u8>();
        // SAFETY: the data pages lie inside the mapping just made.
        let data = unsafe { base.add(PAGE) };
        // SAFETY: as above; only the data pages become readable and writable.
        let status = unsafe {
            libc::mprotect(
                data.cast(),
                data_pages * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        assert_eq!(status, 0, "mprotect");
        let len = data_pages * PAGE;
        let mut guarded = Guarded {
            base,
            total,
            data,
            len,
        };
        fill(rng, guarded.bytes_mut());
        guarded
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `len` readable and writable bytes from `data`, borrowed mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes from `data`, alive as long as self.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    /// `len` bytes ending exactly where the unreadable page after the region begins.
    fn tail(&self, len: usize) -> &[u8] {
        &self.bytes()[self.len - len..]
    }

    /// `len` bytes starting exactly where the unreadable page before the region ends.
    fn head(&self, len: usize) -> &[u8] {
        &self.bytes()[..len]
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer borrowed.
        unsafe { libc::munmap(self.base.cast(), self.total) };
    }
}

/// Every length around every block boundary up to past the lanes' limit, plus a few others.
fn boundary_lengths() -> Vec<usize> {
    let mut lengths = Vec::new();
    for k in 0..=(LANE_INPUT_LEN_MAX / 64 + 2) {
        for d in [-1i64, 0, 1] {
            let len = k as i64 * 64 + d;
            if len >= 0 {
                lengths.push(len as usize);
            }
        }
    }
    lengths.extend([1440, 1472, 8944, 8972, 9000, 17 * 1024, 20000]);
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}

/// Sixteen distinct inputs of each boundary length, each ending exactly at an unreadable page
/// (then each starting exactly after one): a full group through the lanes, a short one, one
/// lane, and the same slice sixteen times.
#[test]
fn inputs_ending_or_starting_at_an_unreadable_page_hash_as_blake3_at_every_block_boundary() {
    let mut rng = SeededRng::from_u64(19_001);
    let max = 20000;
    let regions: Vec<Guarded> = (0..LANES + 1)
        .map(|_| Guarded::new(max, &mut rng))
        .collect();
    for len in boundary_lengths() {
        for (placement, carve) in [
            ("tail", Guarded::tail as fn(&Guarded, usize) -> &[u8]),
            ("head", Guarded::head),
        ] {
            let inputs: Vec<&[u8]> = regions.iter().map(|r| carve(r, len)).collect();
            check(&inputs[..LANES], &format!("{placement} {len}, 16 lanes"));
            check(&inputs, &format!("{placement} {len}, 17"));
            check(&inputs[..LANES - 3], &format!("{placement} {len}, 13"));
            check(&inputs[..2], &format!("{placement} {len}, 2"));
            check(&inputs[..1], &format!("{placement} {len}, 1"));
            let same = vec![inputs[0]; LANES];
            check(&same, &format!("{placement} {len}, one slice 16 times"));
        }
    }
}

/// The same, with the slices carved from the end of `Vec`s allocated to exactly their length
/// (the allocator's neighbour starts right after; no guard, but Miri or ASan would see a read
/// past the end).
#[test]
fn inputs_carved_from_the_end_of_exact_allocations_hash_as_blake3() {
    let mut rng = SeededRng::from_u64(19_002);
    for len in [
        0, 1, 63, 64, 65, 1023, 1024, 1025, 1440, 8972, 16383, 16384, 16385,
    ] {
        let vecs: Vec<Box<[u8]>> = (0..LANES + 5)
            .map(|_| {
                let mut v = vec![0u8; len + 7];
                fill(&mut rng, &mut v);
                v.into_boxed_slice()
            })
            .collect();
        let inputs: Vec<&[u8]> = vecs.iter().map(|v| &v[7..]).collect();
        check(&inputs, &format!("{len}, exact allocations"));
    }
}

/// A length drawn towards the places where a mistake shows: block and chunk boundaries, the
/// lanes' limit, datagram sizes, and anything up to 20000.
fn draw_length(rng: &mut SeededRng) -> usize {
    match rng.below(6) {
        0 => rng.below(20001) as usize,
        1 => {
            let k = rng.below(LANE_INPUT_LEN_MAX as u64 / 64 + 3) as usize;
            (k * 64 + rng.below(3) as usize).saturating_sub(1)
        }
        2 => {
            let chunks = rng.below(18) as usize;
            (chunks * 1024 + [0usize, 1, 2, 64, 65, 1023][rng.below(6) as usize]).min(20000)
        }
        3 => [1440, 1472, 8944, 8972, 9000, 16384, 16385][rng.below(7) as usize],
        4 => rng.below(130) as usize,
        _ => (LANE_INPUT_LEN_MAX as i64 + rng.below(9) as i64 - 4) as usize,
    }
}

/// Random mixes of 0..=100 inputs: runs of equal lengths (often whole groups of sixteen, as a
/// receive batch has), single odd lengths inside a group, inputs over 16 KiB among them, slices
/// repeated, slices carved from the end of allocations, short final groups.
#[test]
fn any_mix_of_inputs_hashes_as_blake3() {
    let mut rng = SeededRng::from_u64(19_003);
    for case in 0..400 {
        let count = rng.below(101) as usize;
        let mut lengths = Vec::with_capacity(count);
        while lengths.len() < count {
            let run = match rng.below(4) {
                0 => 16,
                1 => 32,
                2 => rng.below(40) as usize + 1,
                _ => rng.below(4) as usize + 1,
            };
            let len = draw_length(&mut rng);
            for _ in 0..run.min(count - lengths.len()) {
                // Now and then one odd length inside the run.
                if rng.below(23) == 0 {
                    lengths.push(draw_length(&mut rng));
                } else {
                    lengths.push(len);
                }
            }
        }
        let owned: Vec<Box<[u8]>> = lengths
            .iter()
            .map(|&len| {
                let mut v = vec![0u8; len];
                fill(&mut rng, &mut v);
                v.into_boxed_slice()
            })
            .collect();
        let mut inputs: Vec<&[u8]> = owned.iter().map(|v| &v[..]).collect();
        // Some inputs are the same slice as an earlier one of the same length.
        for i in 1..inputs.len() {
            if rng.below(9) == 0 {
                let j = rng.below(i as u64) as usize;
                if inputs[j].len() == inputs[i].len() {
                    inputs[i] = inputs[j];
                }
            }
        }
        check(&inputs, &format!("case {case}"));
    }
}

/// Sixteen lanes that differ in one byte only, at every block of a 16-chunk input: each lane's
/// hash is its own (a transposition or a lane mix-up in the loads shows here).
#[test]
fn lanes_differing_in_one_byte_get_their_own_hashes() {
    let mut rng = SeededRng::from_u64(19_004);
    for len in [64, 1024, 1088, 2048, 4096 + 64, 8972, 15 * 1024 + 1, 16384] {
        let mut base = vec![0u8; len];
        fill(&mut rng, &mut base);
        for at in (0..len).step_by(61) {
            let lanes: Vec<Vec<u8>> = (0..LANES)
                .map(|lane| {
                    let mut v = base.clone();
                    v[(at + lane * 4) % len] ^= 1 << (lane % 8);
                    v
                })
                .collect();
            let inputs: Vec<&[u8]> = lanes.iter().map(Vec::as_slice).collect();
            check(&inputs, &format!("length {len}, byte {at}"));
            if len > 4096 && at > 2000 {
                break;
            }
        }
    }
}

#[test]
#[should_panic(expected = "one output per input")]
fn an_output_of_another_length_is_refused() {
    let data = [0u8; 64];
    let inputs = [&data[..]; 16];
    let mut out = vec![[0u8; 32]; 15];
    hash_many(&inputs, &mut out);
}
