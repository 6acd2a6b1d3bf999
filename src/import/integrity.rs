//! A weights file's own checksums, checked before any tensor is read.
//!
//! A byte flipped inside a tensor decodes as another number in every format this crate
//! reads, so the check has to come from a checksum:
//! - a PyTorch zip archive carries a CRC-32 per entry, which burn-store's reader does not
//!   verify: every entry is read once through the zip reader, which does;
//! - safetensors has no checksum of its own, so the files this crate writes (trainable
//!   deltas, adapters, PyTorch exports) carry one in the header's metadata under
//!   [`CRC_KEY`]: a CRC-32 of the header (without that key, keys sorted) and of the data
//!   after it. The header counts too: its metadata decides how readers lay tensors out.
//!   Files without the key (anyone else's) are read as they are.

use std::io::Read;
use std::path::Path;

/// The safetensors metadata key holding the CRC-32 (8 hex digits) of the data section.
pub(crate) const CRC_KEY: &str = "burn_transfer.crc32";

/// Reads every entry of a zip archive through the zip reader, which compares each one with
/// its CRC-32, and checks that each entry's name in the central directory is the name in
/// its local header (a flipped byte in a name would otherwise let a reader that looks
/// entries up by name take another one); the first entry that differs is the error.
pub(crate) fn check_zip_entries(path: &Path) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut raw = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("not a readable zip archive: {e}"))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| format!("zip entry {i} is unreadable: {e}"))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        // Local header: 30 fixed bytes (name length at 26), then the name.
        let mut fixed = [0u8; 30];
        raw.seek(SeekFrom::Start(entry.header_start()))
            .and_then(|_| raw.read_exact(&mut fixed))
            .map_err(|e| format!("the local header of zip entry `{name}` is unreadable: {e}"))?;
        let name_len = u16::from_le_bytes([fixed[26], fixed[27]]) as usize;
        let mut local_name = vec![0u8; name_len];
        raw.read_exact(&mut local_name)
            .map_err(|e| format!("the local header of zip entry `{name}` is unreadable: {e}"))?;
        if local_name != entry.name_raw() {
            return Err(format!(
                "zip entry `{name}` is named `{}` in its local header: the file is damaged",
                String::from_utf8_lossy(&local_name)
            ));
        }
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| {
            format!("zip entry `{name}` does not match its CRC-32 ({e}): the file is damaged")
        })?;
    }
    Ok(())
}

/// The CRC-32 of a header (without [`CRC_KEY`], every object's keys sorted, so that the
/// order a JSON library keeps does not matter) followed by the data section.
fn content_crc(header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> u32 {
    let mut hasher = header_hasher(header);
    hasher.update(data);
    hasher.finalize()
}

/// A CRC-32 hasher that has seen the header as [`content_crc`] hashes it.
fn header_hasher(header: &serde_json::Map<String, serde_json::Value>) -> crc32fast::Hasher {
    fn canonical(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().filter(|k| *k != CRC_KEY).collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                    out.push(':');
                    canonical(&map[key], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    canonical(&serde_json::Value::Object(header.clone()), &mut text);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(text.as_bytes());
    hasher
}

/// The header (parsed) and the offset of the data section of safetensors `bytes`.
fn split_header(
    bytes: &[u8],
) -> Result<(serde_json::Map<String, serde_json::Value>, usize), String> {
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or("shorter than a safetensors header")?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| len.checked_add(8))
        .filter(|end| *end <= bytes.len())
        .ok_or("the header runs past the end of the file")?;
    let header = serde_json::from_slice(&bytes[8..end])
        .map_err(|e| format!("the header is not valid JSON: {e}"))?;
    Ok((header, end))
}

/// Adds [`CRC_KEY`] to the metadata of safetensors `bytes`; the data section is unchanged
/// (tensor offsets count from its start), the header is padded to 8 bytes as safetensors
/// pads it.
pub(crate) fn stamp_safetensors(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (mut header, data_at) = split_header(bytes)?;
    // The metadata object exists before the CRC is taken, as it will when it is checked.
    let metadata = header
        .entry("__metadata__")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !metadata.is_object() {
        return Err("the header's __metadata__ is not an object".into());
    }
    let crc = content_crc(&header, &bytes[data_at..]);
    if let Some(serde_json::Value::Object(metadata)) = header.get_mut("__metadata__") {
        metadata.insert(CRC_KEY.into(), format!("{crc:08x}").into());
    }
    let mut text = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - data_at);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[data_at..]);
    Ok(out)
}

/// Why [`check_safetensors_stamp`] failed.
#[derive(Debug, PartialEq)]
pub(crate) enum StampError {
    /// The file is not a readable safetensors file.
    Malformed(String),
    /// The data differs from what was stamped.
    Mismatch,
}

impl From<String> for StampError {
    fn from(reason: String) -> Self {
        Self::Malformed(reason)
    }
}

/// Checks the [`CRC_KEY`] of a safetensors file, when it has one. `Ok(false)`: no stamp.
pub(crate) fn check_safetensors_stamp(path: &Path) -> Result<bool, StampError> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    check_stamp(file, size)
}

/// Checks the [`CRC_KEY`] of safetensors `bytes` held in memory, when they have one.
pub(crate) fn check_stamp_in_bytes(bytes: &[u8]) -> Result<bool, StampError> {
    check_stamp(bytes, bytes.len() as u64)
}

/// Reads a safetensors stream of `size` bytes: its header, then (when the header has a
/// stamp) the data in chunks, so that a model's weights need not fit in memory twice.
fn check_stamp(mut reader: impl Read, size: u64) -> Result<bool, StampError> {
    let mut len = [0u8; 8];
    reader
        .read_exact(&mut len)
        .map_err(|_| "shorter than a safetensors header".to_string())?;
    let header_len = u64::from_le_bytes(len);
    if header_len > size.saturating_sub(8) {
        return Err(StampError::Malformed(
            "the header runs past the end of the file".into(),
        ));
    }
    let mut prefixed = len.to_vec();
    prefixed.resize(8 + header_len as usize, 0);
    reader
        .read_exact(&mut prefixed[8..])
        .map_err(|e| e.to_string())?;
    let (header, _) = split_header(&prefixed)?;
    let Some(stored) = header
        .get("__metadata__")
        .and_then(|m| m.get(CRC_KEY))
        .and_then(|v| v.as_str())
    else {
        return Ok(false);
    };
    let mut hasher = header_hasher(&header);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    if format!("{:08x}", hasher.finalize()) != stored {
        return Err(StampError::Mismatch);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::{Dtype, serialize, tensor::TensorView};

    fn sample() -> Vec<u8> {
        let data: Vec<u8> = (0..24u8).collect();
        let view = TensorView::new(Dtype::F32, vec![2, 3], &data).unwrap();
        serialize([("w", view)], None).unwrap()
    }

    #[test]
    fn a_stamped_file_reads_as_before_and_every_data_flip_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let stamped = stamp_safetensors(&sample()).unwrap();
        // Still a safetensors file with the same tensor.
        let file = safetensors::SafeTensors::deserialize(&stamped).unwrap();
        assert_eq!(
            file.tensor("w").unwrap().data(),
            &(0..24u8).collect::<Vec<_>>()[..]
        );
        std::fs::write(&path, &stamped).unwrap();
        assert_eq!(check_safetensors_stamp(&path), Ok(true));
        assert_eq!(check_stamp_in_bytes(&stamped), Ok(true));
        let data_at = stamped.len() - 24;
        for at in data_at..stamped.len() {
            let mut bad = stamped.clone();
            bad[at] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            assert!(check_safetensors_stamp(&path).is_err(), "byte {at}");
            assert_eq!(check_stamp_in_bytes(&bad), Err(StampError::Mismatch));
        }
        // Someone else's file has no stamp and is not judged.
        std::fs::write(&path, sample()).unwrap();
        assert_eq!(check_safetensors_stamp(&path), Ok(false));
    }
}
