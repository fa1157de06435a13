//! BLAKE3 of many equal-length datagrams at once, one datagram per SIMD lane.
//!
//! Why hand-written: the format hashes every datagram on its own (so a receiver can verify each
//! the moment it arrives), and BLAKE3's speed on one large input comes from hashing 8–16 of its
//! 1 KiB chunks side by side in SIMD lanes, which a 1440-byte input (two chunks) cannot use. The
//! blake3 crate hashes many inputs at once only internally (`hash_many` is not public). Here the
//! lanes are 16 *datagrams*: every lane runs the same block sequence (equal lengths), so the
//! compression function is plain lane-wise arithmetic on `[u32; 16]` that LLVM turns into
//! AVX-512 (one register) or AVX2 (two) instructions in the functions compiled for them.
//!
//! Inputs of up to sixteen chunks (16 KiB: every datagram, jumbo ones included) take the lanes,
//! each lane walking its input's chunks and then the same tree of parent nodes (equal lengths,
//! so the same tree). A jumbo datagram hashed alone by `blake3::hash` runs its first eight
//! chunks in eight lanes but its last chunk and the parents over them one compression at a
//! time; here every compression is sixteen datagrams wide. A remainder of a few go to
//! `blake3::hash`. Equal to `blake3::hash` byte for byte (tested against it).

const LANES: usize = 16;
const CHUNK_LEN: usize = 1024;
const BLOCK_LEN: usize = 64;
/// Longest input the lanes take: sixteen chunks (the largest datagram is 9 KiB).
pub const LANE_INPUT_LEN_MAX: usize = CHUNKS_MAX * CHUNK_LEN;
const CHUNKS_MAX: usize = 16;
/// Chaining values waiting for their right sibling: one per bit of the chunk count.
const CV_STACK_MAX: usize = CHUNKS_MAX.ilog2() as usize + 1;

const IV: [u32; 8] = [
    0x6A09_E667,
    0xBB67_AE85,
    0x3C6E_F372,
    0xA54F_F53A,
    0x510E_527F,
    0x9B05_688C,
    0x1F83_D9AB,
    0x5BE0_CD19,
];
/// Which message word each of the 16 G inputs takes in each of the 7 rounds (the message
/// permutation applied 0..6 times), so no round copies the message.
const MSG_SCHEDULE: [[usize; 16]; 7] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8],
    [3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1],
    [10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6],
    [12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4],
    [9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7],
    [11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13],
];
const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const PARENT: u32 = 4;
const ROOT: u32 = 8;

type Lanes = [u32; LANES];

/// The two lane-wise steps, as the instruction set at hand does them: a full block's message
/// words in lane order, and the compression function.
struct Ops<L, C> {
    load_full: L,
    compress: C,
}

/// A full block's message words in lane order, from offset `usize` of every input.
trait LoadFull: Fn(&[&[u8]; LANES], usize) -> [Lanes; 16] {}
impl<T: Fn(&[&[u8]; LANES], usize) -> [Lanes; 16]> LoadFull for T {}
/// The compression function on every lane: (chaining values, block, counter, length, flags).
trait Compress: Fn(&mut [Lanes; 8], &[Lanes; 16], u64, u32, u32) {}
impl<T: Fn(&mut [Lanes; 8], &[Lanes; 16], u64, u32, u32)> Compress for T {}

#[inline(always)]
fn g(state: &mut [Lanes; 16], a: usize, b: usize, c: usize, d: usize, x: &Lanes, y: &Lanes) {
    for lane in 0..LANES {
        let (mut va, mut vb, mut vc, mut vd) = (
            state[a][lane],
            state[b][lane],
            state[c][lane],
            state[d][lane],
        );
        va = va.wrapping_add(vb).wrapping_add(x[lane]);
        vd = (vd ^ va).rotate_right(16);
        vc = vc.wrapping_add(vd);
        vb = (vb ^ vc).rotate_right(12);
        va = va.wrapping_add(vb).wrapping_add(y[lane]);
        vd = (vd ^ va).rotate_right(8);
        vc = vc.wrapping_add(vd);
        vb = (vb ^ vc).rotate_right(7);
        state[a][lane] = va;
        state[b][lane] = vb;
        state[c][lane] = vc;
        state[d][lane] = vd;
    }
}

/// The compression function on every lane: `cv` becomes the new chaining value.
#[inline(always)]
fn compress(cv: &mut [Lanes; 8], block: &[Lanes; 16], counter: u64, block_len: u32, flags: u32) {
    let mut state: [Lanes; 16] = [
        cv[0],
        cv[1],
        cv[2],
        cv[3],
        cv[4],
        cv[5],
        cv[6],
        cv[7],
        [IV[0]; LANES],
        [IV[1]; LANES],
        [IV[2]; LANES],
        [IV[3]; LANES],
        [counter as u32; LANES],
        [(counter >> 32) as u32; LANES],
        [block_len; LANES],
        [flags; LANES],
    ];
    let m = block;
    for s in &MSG_SCHEDULE {
        g(&mut state, 0, 4, 8, 12, &m[s[0]], &m[s[1]]);
        g(&mut state, 1, 5, 9, 13, &m[s[2]], &m[s[3]]);
        g(&mut state, 2, 6, 10, 14, &m[s[4]], &m[s[5]]);
        g(&mut state, 3, 7, 11, 15, &m[s[6]], &m[s[7]]);
        g(&mut state, 0, 5, 10, 15, &m[s[8]], &m[s[9]]);
        g(&mut state, 1, 6, 11, 12, &m[s[10]], &m[s[11]]);
        g(&mut state, 2, 7, 8, 13, &m[s[12]], &m[s[13]]);
        g(&mut state, 3, 4, 9, 14, &m[s[14]], &m[s[15]]);
    }
    for i in 0..8 {
        cv[i] = core::array::from_fn(|lane| state[i][lane] ^ state[i + 8][lane]);
    }
}

/// Message words of block `offset .. offset + len` of every lane's input (zero padded).
#[inline(always)]
fn load_block(
    inputs: &[&[u8]; LANES],
    offset: usize,
    len: usize,
    ops: &Ops<impl LoadFull, impl Compress>,
) -> [Lanes; 16] {
    if len == BLOCK_LEN {
        return (ops.load_full)(inputs, offset);
    }
    let mut block = [[0u32; LANES]; 16];
    for (lane, input) in inputs.iter().enumerate() {
        let mut bytes = [0u8; BLOCK_LEN];
        bytes[..len].copy_from_slice(&input[offset..offset + len]);
        for (word, chunk) in bytes.chunks_exact(4).enumerate() {
            block[word][lane] = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        }
    }
    block
}

/// A full block of every lane's input, transposed into lane order by plain loads and stores.
#[inline(always)]
fn load_full_block_scalar(inputs: &[&[u8]; LANES], offset: usize) -> [Lanes; 16] {
    let mut block = [[0u32; LANES]; 16];
    for (lane, input) in inputs.iter().enumerate() {
        let bytes: &[u8; BLOCK_LEN] = input[offset..offset + BLOCK_LEN]
            .try_into()
            .expect("a full block");
        for word in 0..16 {
            block[word][lane] = u32::from_le_bytes([
                bytes[4 * word],
                bytes[4 * word + 1],
                bytes[4 * word + 2],
                bytes[4 * word + 3],
            ]);
        }
    }
    block
}

/// A full block of every lane's input, transposed into lane order with AVX-512 shuffles: 16 loads,
/// a 16×16 transpose of 32-bit words (unpack 32, unpack 64, two 128-bit shuffles), 16 stores.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn load_full_block_avx512(inputs: &[&[u8]; LANES], offset: usize) -> [Lanes; 16] {
    use std::arch::x86_64::*;
    let mut rows = [_mm512_setzero_si512(); 16];
    for (row, input) in rows.iter_mut().zip(inputs) {
        let block: &[u8; BLOCK_LEN] = input[offset..offset + BLOCK_LEN]
            .try_into()
            .expect("a full block");
        // SAFETY: `block` is 64 readable bytes; the load reads exactly 64, unaligned.
        *row = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
    }
    let unpack = |i: usize| {
        (
            _mm512_unpacklo_epi32(rows[2 * i], rows[2 * i + 1]),
            _mm512_unpackhi_epi32(rows[2 * i], rows[2 * i + 1]),
        )
    };
    let (ab0, ab2) = unpack(0);
    let (cd0, cd2) = unpack(1);
    let (ef0, ef2) = unpack(2);
    let (gh0, gh2) = unpack(3);
    let (ij0, ij2) = unpack(4);
    let (kl0, kl2) = unpack(5);
    let (mn0, mn2) = unpack(6);
    let (op0, op2) = unpack(7);
    let quad = |x0, y0, x2, y2| {
        [
            _mm512_unpacklo_epi64(x0, y0),
            _mm512_unpackhi_epi64(x0, y0),
            _mm512_unpacklo_epi64(x2, y2),
            _mm512_unpackhi_epi64(x2, y2),
        ]
    };
    let abcd = quad(ab0, cd0, ab2, cd2);
    let efgh = quad(ef0, gh0, ef2, gh2);
    let ijkl = quad(ij0, kl0, ij2, kl2);
    let mnop = quad(mn0, op0, mn2, op2);
    let lo = |a, b| _mm512_shuffle_i32x4::<0x88>(a, b);
    let hi = |a, b| _mm512_shuffle_i32x4::<0xdd>(a, b);
    let abcdefgh: [__m512i; 8] = core::array::from_fn(|i| {
        if i < 4 {
            lo(abcd[i], efgh[i])
        } else {
            hi(abcd[i - 4], efgh[i - 4])
        }
    });
    let ijklmnop: [__m512i; 8] = core::array::from_fn(|i| {
        if i < 4 {
            lo(ijkl[i], mnop[i])
        } else {
            hi(ijkl[i - 4], mnop[i - 4])
        }
    });
    let mut block = [[0u32; LANES]; 16];
    for (word, out) in block.iter_mut().enumerate() {
        let column = if word < 8 {
            lo(abcdefgh[word], ijklmnop[word])
        } else {
            hi(abcdefgh[word - 8], ijklmnop[word - 8])
        };
        // SAFETY: `out` is 16 u32, 64 writable bytes; the store writes exactly 64, unaligned.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), column) };
    }
    block
}

/// The compression function on every lane with AVX-512 intrinsics: the sixteen state rows stay
/// in registers through the seven rounds, which the portable loops did not get from the
/// compiler (they kept the state in memory: 448 vector moves per pass, and gathers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn compress_avx512(
    cv: &mut [Lanes; 8],
    block: &[Lanes; 16],
    counter: u64,
    block_len: u32,
    flags: u32,
) {
    use std::arch::x86_64::*;
    // SAFETY: each `Lanes` is 16 u32, 64 readable bytes; the load reads exactly 64, unaligned.
    let load = |lanes: &Lanes| unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) };
    let m: [__m512i; 16] = core::array::from_fn(|i| load(&block[i]));
    let mut v: [__m512i; 16] = [
        load(&cv[0]),
        load(&cv[1]),
        load(&cv[2]),
        load(&cv[3]),
        load(&cv[4]),
        load(&cv[5]),
        load(&cv[6]),
        load(&cv[7]),
        _mm512_set1_epi32(IV[0] as i32),
        _mm512_set1_epi32(IV[1] as i32),
        _mm512_set1_epi32(IV[2] as i32),
        _mm512_set1_epi32(IV[3] as i32),
        _mm512_set1_epi32(counter as u32 as i32),
        _mm512_set1_epi32((counter >> 32) as u32 as i32),
        _mm512_set1_epi32(block_len as i32),
        _mm512_set1_epi32(flags as i32),
    ];
    macro_rules! g {
        ($a:literal, $b:literal, $c:literal, $d:literal, $x:expr, $y:expr) => {
            v[$a] = _mm512_add_epi32(_mm512_add_epi32(v[$a], v[$b]), $x);
            v[$d] = _mm512_ror_epi32::<16>(_mm512_xor_si512(v[$d], v[$a]));
            v[$c] = _mm512_add_epi32(v[$c], v[$d]);
            v[$b] = _mm512_ror_epi32::<12>(_mm512_xor_si512(v[$b], v[$c]));
            v[$a] = _mm512_add_epi32(_mm512_add_epi32(v[$a], v[$b]), $y);
            v[$d] = _mm512_ror_epi32::<8>(_mm512_xor_si512(v[$d], v[$a]));
            v[$c] = _mm512_add_epi32(v[$c], v[$d]);
            v[$b] = _mm512_ror_epi32::<7>(_mm512_xor_si512(v[$b], v[$c]));
        };
    }
    for s in &MSG_SCHEDULE {
        g!(0, 4, 8, 12, m[s[0]], m[s[1]]);
        g!(1, 5, 9, 13, m[s[2]], m[s[3]]);
        g!(2, 6, 10, 14, m[s[4]], m[s[5]]);
        g!(3, 7, 11, 15, m[s[6]], m[s[7]]);
        g!(0, 5, 10, 15, m[s[8]], m[s[9]]);
        g!(1, 6, 11, 12, m[s[10]], m[s[11]]);
        g!(2, 7, 8, 13, m[s[12]], m[s[13]]);
        g!(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (i, out) in cv.iter_mut().enumerate() {
        let word = _mm512_xor_si512(v[i], v[i + 8]);
        // SAFETY: `out` is 16 u32, 64 writable bytes; the store writes exactly 64, unaligned.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), word) };
    }
}

/// The chaining value of chunk `index` (bytes `start .. start + len` of every input).
#[inline(always)]
fn chunk(
    inputs: &[&[u8]; LANES],
    index: u64,
    start: usize,
    len: usize,
    root: bool,
    ops: &Ops<impl LoadFull, impl Compress>,
) -> [Lanes; 8] {
    let mut cv: [Lanes; 8] = core::array::from_fn(|i| [IV[i]; LANES]);
    let blocks = len.div_ceil(BLOCK_LEN).max(1);
    for block_index in 0..blocks {
        let offset = block_index * BLOCK_LEN;
        let block_len = (len - offset).min(BLOCK_LEN);
        let mut flags = 0;
        if block_index == 0 {
            flags |= CHUNK_START;
        }
        if block_index == blocks - 1 {
            flags |= CHUNK_END;
            if root {
                flags |= ROOT;
            }
        }
        let block = load_block(inputs, start + offset, block_len, ops);
        (ops.compress)(&mut cv, &block, index, block_len as u32, flags);
    }
    cv
}

/// The parent node over `left` and `right` (`ROOT`: it is the root).
#[inline(always)]
fn parent(
    left: &[Lanes; 8],
    right: &[Lanes; 8],
    root: bool,
    ops: &Ops<impl LoadFull, impl Compress>,
) -> [Lanes; 8] {
    let block: [Lanes; 16] = core::array::from_fn(|i| if i < 8 { left[i] } else { right[i - 8] });
    let mut cv: [Lanes; 8] = core::array::from_fn(|i| [IV[i]; LANES]);
    let flags = if root { PARENT | ROOT } else { PARENT };
    (ops.compress)(&mut cv, &block, 0, BLOCK_LEN as u32, flags);
    cv
}

#[inline(always)]
fn hash_lanes_generic(
    inputs: &[&[u8]; LANES],
    out: &mut [[u8; 32]],
    ops: &Ops<impl LoadFull, impl Compress>,
) {
    let len = inputs[0].len();
    debug_assert!(inputs.iter().all(|i| i.len() == len), "equal lengths");
    debug_assert!(len <= LANE_INPUT_LEN_MAX, "at most {CHUNKS_MAX} chunks");
    let chunks = len.div_ceil(CHUNK_LEN).max(1);
    // BLAKE3's tree as its incremental hasher builds it: each chunk but the last is pushed and
    // merged with its left neighbours while the count of chunks so far is even; the last chunk
    // then folds the stack from the top, the final parent being the root (a lone chunk is the
    // root itself).
    let mut stack = [[[0u32; LANES]; 8]; CV_STACK_MAX];
    let mut depth = 0;
    for index in 0..chunks - 1 {
        let mut cv = chunk(
            inputs,
            index as u64,
            index * CHUNK_LEN,
            CHUNK_LEN,
            false,
            ops,
        );
        let mut total = index + 1;
        while total & 1 == 0 {
            depth -= 1;
            cv = parent(&stack[depth], &cv, false, ops);
            total >>= 1;
        }
        stack[depth] = cv;
        depth += 1;
    }
    let last = (chunks - 1) * CHUNK_LEN;
    let mut root = chunk(
        inputs,
        (chunks - 1) as u64,
        last,
        len - last,
        depth == 0,
        ops,
    );
    while depth > 0 {
        depth -= 1;
        root = parent(&stack[depth], &root, depth == 0, ops);
    }
    for (lane, hash) in out.iter_mut().enumerate().take(LANES) {
        for (word, bytes) in hash.chunks_exact_mut(4).enumerate() {
            bytes.copy_from_slice(&root[word][lane].to_le_bytes());
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn hash_lanes_avx512(inputs: &[&[u8]; LANES], out: &mut [[u8; 32]]) {
    let ops = Ops {
        load_full: |inputs: &[&[u8]; LANES], offset| load_full_block_avx512(inputs, offset),
        compress: |cv: &mut [Lanes; 8], block: &[Lanes; 16], counter, len, flags| {
            compress_avx512(cv, block, counter, len, flags)
        },
    };
    hash_lanes_generic(inputs, out, &ops);
}

/// Plain Rust: lane-wise loops the compiler vectorises for the features of the function this
/// is written in (closures take them on; a function pointer would not).
macro_rules! portable_ops {
    () => {
        Ops {
            load_full: |inputs: &[&[u8]; LANES], offset| load_full_block_scalar(inputs, offset),
            compress: |cv: &mut [Lanes; 8], block: &[Lanes; 16], counter, len, flags| {
                compress(cv, block, counter, len, flags)
            },
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hash_lanes_avx2(inputs: &[&[u8]; LANES], out: &mut [[u8; 32]]) {
    hash_lanes_generic(inputs, out, &portable_ops!());
}

fn hash_lanes(inputs: &[&[u8]; LANES], out: &mut [[u8; 32]]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU has AVX-512F and AVX-512VL (checked just above), the only
            // requirement of calling a function compiled for them.
            return unsafe { hash_lanes_avx512(inputs, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { hash_lanes_avx2(inputs, out) };
        }
    }
    hash_lanes_generic(inputs, out, &portable_ops!());
}

/// `out[i] = blake3::hash(inputs[i])` for every input. Equal-length inputs of at most
/// `LANE_INPUT_LEN_MAX` bytes go through the lanes sixteen at a time.
pub fn hash_many(inputs: &[&[u8]], out: &mut [[u8; 32]]) {
    assert_eq!(inputs.len(), out.len(), "one output per input");
    let mut done = 0;
    while inputs.len() - done >= LANES {
        let group: &[&[u8]; LANES] = inputs[done..done + LANES].try_into().expect("LANES inputs");
        let len = group[0].len();
        if len > LANE_INPUT_LEN_MAX || group.iter().any(|i| i.len() != len) {
            break;
        }
        hash_lanes(group, &mut out[done..done + LANES]);
        done += LANES;
    }
    // A short last group still takes the lanes (the spare ones repeat its last input) where
    // that pays: for inputs of up to two chunks one pass of sixteen lanes costs about what two
    // single hashes do, but `blake3::hash` runs a longer input's chunks side by side itself
    // (a jumbo datagram: 3.3 GiB/s alone against 3.9 in full lanes, so a pass pays from 14).
    let rest = &inputs[done..];
    let len = rest.first().map_or(0, |i| i.len());
    let lanes_pay = if len <= 2 * CHUNK_LEN {
        rest.len() >= 2
    } else {
        rest.len() >= 14
    };
    if lanes_pay && len <= LANE_INPUT_LEN_MAX && rest.iter().all(|i| i.len() == len) {
        let last = rest[rest.len() - 1];
        let group: [&[u8]; LANES] = core::array::from_fn(|i| rest.get(i).copied().unwrap_or(last));
        let mut hashes = [[0u8; 32]; LANES];
        hash_lanes(&group, &mut hashes);
        out[done..].copy_from_slice(&hashes[..rest.len()]);
        return;
    }
    for (input, hash) in inputs[done..].iter().zip(out[done..].iter_mut()) {
        *hash = *blake3::hash(input).as_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(len: usize, seed: u8) {
        let inputs: Vec<Vec<u8>> = (0..37)
            .map(|i| (0..len).map(|j| (i * 31 + j * 7) as u8 ^ seed).collect())
            .collect();
        let slices: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let mut out = vec![[0u8; 32]; slices.len()];
        hash_many(&slices, &mut out);
        for (input, hash) in slices.iter().zip(&out) {
            assert_eq!(hash, blake3::hash(input).as_bytes(), "length {len}");
        }
    }

    #[test]
    fn equals_blake3_at_every_boundary() {
        for len in [
            0,
            1,
            63,
            64,
            65,
            1023,
            1024,
            1025,
            1088,
            1440,
            2047,
            2048,
            2049,
            3072,
            3073,
            4096,
            4097,
            7168,
            8192,
            8193,
            8944,
            8972,
            9216,
            15 * 1024 + 1,
            16383,
            16384,
            16385,
            20000,
        ] {
            check(len, 0x5a);
        }
    }

    /// Every instruction set's variant this CPU runs, not only the one `hash_many` picks.
    #[test]
    fn every_variant_equals_blake3() {
        for len in [0, 1, 64, 1024, 1440, 2048, 2049, 8972, 16384] {
            let inputs: Vec<Vec<u8>> = (0..LANES)
                .map(|i| (0..len).map(|j| (i * 13 + j * 5) as u8).collect())
                .collect();
            let group: [&[u8]; LANES] = core::array::from_fn(|i| inputs[i].as_slice());
            let expected: Vec<[u8; 32]> =
                group.iter().map(|i| *blake3::hash(i).as_bytes()).collect();
            let mut out = [[0u8; 32]; LANES];
            hash_lanes_generic(&group, &mut out, &portable_ops!());
            assert_eq!(out.to_vec(), expected, "portable, length {len}");
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    out = [[0u8; 32]; LANES];
                    // SAFETY: the CPU has AVX2 (checked just above).
                    unsafe { hash_lanes_avx2(&group, &mut out) };
                    assert_eq!(out.to_vec(), expected, "AVX2, length {len}");
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    out = [[0u8; 32]; LANES];
                    // SAFETY: the CPU has AVX-512F and AVX-512VL (checked just above).
                    unsafe { hash_lanes_avx512(&group, &mut out) };
                    assert_eq!(out.to_vec(), expected, "AVX-512, length {len}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn equals_blake3_for_any_length_and_content(len in 0usize..17000, seed in any::<u8>()) {
            check(len, seed);
        }
    }
}
