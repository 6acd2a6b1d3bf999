//! A checksum footer on the crate's own files, so that a damaged file is an error instead of
//! other numbers.
//!
//! MessagePack and raw little-endian floats decode a flipped byte inside a tensor as a
//! different value without complaint; a CRC-32 over the whole content catches every single
//! flipped byte and every burst of up to 32 bits. The footer goes at the end, so a file
//! keeps its format for readers that stop after their own data (burn's recorder reads one
//! MessagePack value and ignores what follows).
//!
//! Layout: the sections back to back, then one little-endian `u64` length per section, a
//! `u32` section count, the CRC-32 of everything before it, and [`MAGIC`].

use crate::error::{Result, TransferError};
use std::path::Path;

/// The last bytes of every sealed file.
const MAGIC: &[u8; 16] = b"burn-transfer:c1";

/// Bytes after the lengths: count, CRC, magic.
const TAIL: usize = 4 + 4 + MAGIC.len();

/// What [`open`] found.
#[derive(Debug, PartialEq)]
pub(crate) enum Opened<'a> {
    /// A sealed file whose checksum holds: its sections.
    Checked(Vec<&'a [u8]>),
    /// No footer: a file written by another tool (or before footers existed), returned whole.
    Unsealed(&'a [u8]),
}

/// Appends the footer to `sections`, concatenated.
pub(crate) fn seal(sections: &[&[u8]]) -> Vec<u8> {
    let body: usize = sections.iter().map(|s| s.len()).sum();
    let mut out = Vec::with_capacity(body + 8 * sections.len() + TAIL);
    for section in sections {
        out.extend_from_slice(section);
    }
    finish(out, sections.iter().map(|s| s.len()))
}

/// [`seal`] with `out` as its first section, extended in place: a model's record of hundreds
/// of megabytes is not copied again.
pub(crate) fn seal_after(first: Vec<u8>, more: &[&[u8]]) -> Vec<u8> {
    let first_len = first.len();
    let mut out = first;
    out.reserve(more.iter().map(|s| s.len()).sum::<usize>() + 8 * (more.len() + 1) + TAIL);
    for section in more {
        out.extend_from_slice(section);
    }
    finish(
        out,
        std::iter::once(first_len).chain(more.iter().map(|s| s.len())),
    )
}

/// Writes the section table, the CRC-32 of everything before it and the magic.
fn finish(mut out: Vec<u8>, lengths: impl Iterator<Item = usize>) -> Vec<u8> {
    let mut count = 0u32;
    for len in lengths {
        out.extend_from_slice(&(len as u64).to_le_bytes());
        count += 1;
    }
    out.extend_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(MAGIC);
    out
}

/// The error for a file whose footer or content does not hold.
pub(crate) fn damaged(path: &Path, reason: &str) -> TransferError {
    TransferError::DamagedFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Checks the footer of `bytes` (read from `path`) and splits the sections apart.
///
/// A file without the magic is [`Opened::Unsealed`]; one whose last bytes are the magic
/// with one or two bytes changed is damaged, so that a flip inside the footer cannot pass
/// the file off as unsealed.
pub(crate) fn open<'a>(bytes: &'a [u8], path: &Path) -> Result<Opened<'a>> {
    let Some(magic_at) = bytes.len().checked_sub(MAGIC.len()) else {
        return Ok(Opened::Unsealed(bytes));
    };
    let differing = bytes[magic_at..]
        .iter()
        .zip(MAGIC)
        .filter(|(a, b)| a != b)
        .count();
    match differing {
        0 => {}
        1 | 2 => return Err(damaged(path, "its checksum footer is altered")),
        _ => return Ok(Opened::Unsealed(bytes)),
    }
    if bytes.len() < TAIL {
        return Err(damaged(path, "it is shorter than its footer"));
    }
    let crc_at = bytes.len() - MAGIC.len() - 4;
    let stored = u32::from_le_bytes(bytes[crc_at..crc_at + 4].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..crc_at]) != stored {
        return Err(damaged(path, "its content does not match its CRC-32"));
    }
    // The checksum holds, so what follows was written by `seal`; still checked, not trusted.
    let count_at = crc_at - 4;
    let count = u32::from_le_bytes(bytes[count_at..crc_at].try_into().expect("4 bytes")) as usize;
    let lengths_at = count
        .checked_mul(8)
        .and_then(|n| count_at.checked_sub(n))
        .ok_or_else(|| damaged(path, "its section table is impossible"))?;
    let mut sections = Vec::with_capacity(count);
    let mut start = 0usize;
    for entry in bytes[lengths_at..count_at].chunks_exact(8) {
        let len = u64::from_le_bytes(entry.try_into().expect("8 bytes"));
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|end| *end <= lengths_at)
            .ok_or_else(|| damaged(path, "a section runs past the end"))?;
        sections.push(&bytes[start..end]);
        start = end;
    }
    if start != lengths_at {
        return Err(damaged(path, "its sections do not fill it"));
    }
    Ok(Opened::Checked(sections))
}

/// Like [`open`], for files the crate always seals: an unsealed file is damaged too.
pub(crate) fn open_sealed<'a>(bytes: &'a [u8], path: &Path) -> Result<Vec<&'a [u8]>> {
    match open(bytes, path)? {
        Opened::Checked(sections) => Ok(sections),
        Opened::Unsealed(_) => Err(damaged(
            path,
            "it has no checksum footer (truncated, or not written by this version of burn-transfer)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "f.bin";

    fn sample() -> Vec<u8> {
        seal(&[b"first section", b"", b"third"])
    }

    #[test]
    fn sections_come_back_as_written() {
        let bytes = sample();
        let expected: Vec<&[u8]> = vec![b"first section", b"", b"third"];
        assert_eq!(
            open(&bytes, Path::new(PATH)).unwrap(),
            Opened::Checked(expected)
        );
        assert_eq!(open_sealed(&seal(&[]), Path::new(PATH)).unwrap().len(), 0);
        assert_eq!(
            seal_after(b"first section".to_vec(), &[b"", b"third"]),
            bytes
        );
    }

    #[test]
    fn every_flipped_bit_is_an_error() {
        let bytes = sample();
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[at] ^= 1 << bit;
                assert!(
                    open_sealed(&bad, Path::new(PATH)).is_err(),
                    "byte {at} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error_or_unsealed() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            let result = open(&bytes[..cut], Path::new(PATH));
            assert!(
                matches!(result, Err(_) | Ok(Opened::Unsealed(_))),
                "cut {cut}"
            );
            assert!(open_sealed(&bytes[..cut], Path::new(PATH)).is_err());
        }
    }

    #[test]
    fn foreign_bytes_are_unsealed() {
        let plain = b"a file of someone else's".to_vec();
        assert_eq!(
            open(&plain, Path::new(PATH)).unwrap(),
            Opened::Unsealed(&plain[..])
        );
        assert_eq!(
            open(b"", Path::new(PATH)).unwrap(),
            Opened::Unsealed(&b""[..])
        );
    }
}
