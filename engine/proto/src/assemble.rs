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
    assert!(chunk.len() <= out.len() - DATAGRAM_HEADER_LEN, "chunk exceeds payload capacity");
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

/// Builds every hash block bottom-up from the data datagrams' hashes. `write(serial, bytes)`
/// receives each block datagram. Returns the top hashes for the file info.
pub fn build_hash_levels(
    shape: &TreeShape,
    file_id: FileId,
    datagram_size: u16,
    data_hashes: Vec<[u8; 32]>,
    mut write: impl FnMut(u32, &[u8]),
) -> Vec<[u8; 32]> {
    assert_eq!(data_hashes.len(), shape.data_count() as usize, "one hash per data datagram");
    let mut below = data_hashes;
    let mut block = vec![0u8; usize::from(datagram_size)];
    for level in 1..=shape.depth() {
        let mut hashes = Vec::with_capacity(shape.node_count(level) as usize);
        for index in 0..shape.node_count(level) {
            let children = shape.children(level, index);
            let child_hashes = &below[children.start as usize..children.end as usize];
            let payload_len = child_hashes.len() * HASH_LEN;
            assert!(payload_len <= payload_capacity(datagram_size), "fanout overflows block");
            let serial = shape.serial_of(level, index);
            DatagramHeader {
                kind: DatagramKind::HashBlock,
                file_id,
                serial: Serial(serial),
                level,
                index,
                payload_len: u16::try_from(payload_len).expect("payload fits u16"),
                loop_len: shape.loop_len(),
            }
            .emit(&mut block);
            for (slot, hash) in child_hashes.iter().enumerate() {
                let at = DATAGRAM_HEADER_LEN + slot * HASH_LEN;
                block[at..at + HASH_LEN].copy_from_slice(hash);
            }
            block[DATAGRAM_HEADER_LEN + payload_len..].fill(0);
            hashes.push(*blake3::hash(&block).as_bytes());
            write(serial, &block);
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
