//! Building loop datagrams: used by the packer (into an mmap'd archive) and by tests and
//! simulations (in memory). Pure functions over caller-owned buffers.

use crate::info::{payload_capacity, FileInfo, Watermark};
use crate::layout::{TreeShape, HASH_LEN};
use crate::wire::datagram::{DatagramHeader, DatagramKind, FileId, Serial, DATAGRAM_HEADER_LEN};

/// Writes data datagram `index` (carrying `chunk` of the frame stream) into `out`, which is
/// exactly one datagram long. Padding is zeroed.
pub fn write_data_datagram(
    out: &mut [u8],
    shape: &TreeShape,
    file_id: FileId,
    index: u32,
    chunk: &[u8],
) {
    assert!(
        chunk.len() <= out.len() - DATAGRAM_HEADER_LEN,
        "chunk exceeds payload capacity"
    );
    DatagramHeader {
        kind: DatagramKind::Data,
        file_id,
        serial: Serial(shape.serial_of(0, index)),
        level: 0,
        index,
        payload_len: u16::try_from(chunk.len()).expect("payload fits u16"),
        loop_len: shape.loop_len(),
    }
    .emit(out);
    out[DATAGRAM_HEADER_LEN..DATAGRAM_HEADER_LEN + chunk.len()].copy_from_slice(chunk);
    out[DATAGRAM_HEADER_LEN + chunk.len()..].fill(0);
}

/// Writes hash block (level, index) holding `child_hashes` into `out` (one datagram long).
pub fn write_hash_block(
    out: &mut [u8],
    shape: &TreeShape,
    file_id: FileId,
    level: u8,
    index: u32,
    child_hashes: &[[u8; 32]],
) {
    let payload_len = child_hashes.len() * HASH_LEN;
    assert!(level >= 1, "hash blocks live at level 1 and above");
    assert!(
        payload_len <= out.len() - DATAGRAM_HEADER_LEN,
        "fanout overflows the block"
    );
    DatagramHeader {
        kind: DatagramKind::HashBlock,
        file_id,
        serial: Serial(shape.serial_of(level, index)),
        level,
        index,
        payload_len: u16::try_from(payload_len).expect("payload fits u16"),
        loop_len: shape.loop_len(),
    }
    .emit(out);
    for (slot, hash) in child_hashes.iter().enumerate() {
        let at = DATAGRAM_HEADER_LEN + slot * HASH_LEN;
        out[at..at + HASH_LEN].copy_from_slice(hash);
    }
    out[DATAGRAM_HEADER_LEN + payload_len..].fill(0);
}

/// Builds the hash blocks of levels `from_level + 1 ..= depth` from the hashes of the nodes
/// at `from_level`. `write(serial, bytes)` receives each block datagram. Returns the top
/// hashes for the file info.
pub fn build_hash_levels(
    shape: &TreeShape,
    file_id: FileId,
    datagram_size: u16,
    from_level: u8,
    hashes_at_from_level: Vec<[u8; 32]>,
    mut write: impl FnMut(u32, &[u8]),
) -> Vec<[u8; 32]> {
    assert_eq!(
        hashes_at_from_level.len(),
        shape.node_count(from_level) as usize,
        "one hash per node of the starting level"
    );
    let mut below = hashes_at_from_level;
    let mut block = vec![0u8; usize::from(datagram_size)];
    for level in from_level + 1..=shape.depth() {
        let mut hashes = Vec::with_capacity(shape.node_count(level) as usize);
        for index in 0..shape.node_count(level) {
            let children = shape.children(level, index);
            let child_hashes = &below[children.start as usize..children.end as usize];
            write_hash_block(&mut block, shape, file_id, level, index, child_hashes);
            hashes.push(*blake3::hash(&block).as_bytes());
            write(shape.serial_of(level, index), &block);
        }
        below = hashes;
    }
    assert_eq!(below.len(), shape.top_count(), "top level size");
    below
}

/// Description of a file to assemble in memory.
pub struct InMemoryFile<'a> {
    pub file_id: FileId,
    pub name: &'a str,
    pub datagram_size: u16,
    pub frame_stream: &'a [u8],
    pub watermark: Option<Watermark>,
}

/// Assembles a whole loop in memory: the info and every datagram indexed by serial. The
/// frame stream is treated as opaque bytes (one frame). For tests and simulations.
pub fn assemble_in_memory(file: &InMemoryFile<'_>) -> (FileInfo, Vec<Vec<u8>>) {
    let capacity = payload_capacity(file.datagram_size);
    let stream_len = file.frame_stream.len().max(1);
    let data_count = u32::try_from(stream_len.div_ceil(capacity)).expect("test file fits u32");
    let fanout = crate::info::hash_fanout(file.datagram_size);
    let shape = TreeShape::new(data_count, fanout).expect("valid shape");
    let mut datagrams = vec![vec![0u8; usize::from(file.datagram_size)]; shape.loop_len() as usize];
    let mut data_hashes = Vec::with_capacity(data_count as usize);
    for index in 0..data_count {
        let start = (index as usize * capacity).min(file.frame_stream.len());
        let end = (start + capacity).min(file.frame_stream.len());
        let serial = shape.serial_of(0, index) as usize;
        write_data_datagram(
            &mut datagrams[serial],
            &shape,
            file.file_id,
            index,
            &file.frame_stream[start..end],
        );
        data_hashes.push(*blake3::hash(&datagrams[serial]).as_bytes());
    }
    let top_hashes = build_hash_levels(
        &shape,
        file.file_id,
        file.datagram_size,
        0,
        data_hashes,
        |serial, bytes| datagrams[serial as usize].copy_from_slice(bytes),
    );
    let info = FileInfo {
        file_id: file.file_id,
        encrypted: false,
        watermark: file.watermark.clone(),
        original_size: file.frame_stream.len() as u64,
        original_hash: *blake3::hash(file.frame_stream).as_bytes(),
        frame_raw_size: u32::try_from(stream_len).unwrap_or(u32::MAX).max(1),
        frame_count: 1,
        frame_stream_len: stream_len as u64,
        datagram_size: file.datagram_size,
        data_datagram_count: data_count,
        loop_len: shape.loop_len(),
        name: file.name.to_owned(),
        top_hashes,
    };
    (info, datagrams)
}
