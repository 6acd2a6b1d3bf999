//! A structural check of PyTorch's legacy (pre-1.6) `.pth` format.
//!
//! burn-store 0.21 reads such files lazily and, where a storage lies past the end of a
//! truncated file, fills the tensor with zeros instead of failing: a half-downloaded
//! checkpoint would load "cleanly" with its last layers zeroed. The format is simple enough
//! to check: after four pickles (magic, protocol, system info, the state dict) comes the list
//! of storage keys, then one record per storage — an 8-byte little-endian element count and
//! the raw elements. The records must account for every byte up to the end of the file.

use burn_store::pytorch::pickle_reader::{Object, read_pickle, skip_pickle};
use std::io::{BufReader, Seek};
use std::path::Path;

/// Ok when the data section holds exactly one complete record per storage. `element_sizes`
/// are the byte sizes of the dtypes the file's tensors use (the records do not say which
/// storage has which, so each record is tried with each size; a wrong size derails the walk
/// within a record or two).
pub(crate) fn check_legacy_records(path: &Path, element_sizes: &[usize]) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len() as usize;
    let mut reader = BufReader::new(file);
    for what in ["magic number", "protocol version", "system info"] {
        read_pickle(&mut reader).map_err(|e| format!("cannot read the {what}: {e}"))?;
    }
    skip_pickle(&mut reader).map_err(|e| format!("cannot read the state dict: {e}"))?;
    let storages = match read_pickle(&mut reader) {
        Ok(Object::List(keys)) => keys.len(),
        _ => return Err("cannot read the list of storages".into()),
    };
    let start = reader.stream_position().map_err(|e| e.to_string())? as usize;
    let mut bytes = Vec::with_capacity(len - start);
    std::io::Read::read_to_end(&mut reader, &mut bytes).map_err(|e| e.to_string())?;

    let mut sizes = element_sizes.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    let mut budget = 1_000_000usize;
    if walk(&bytes, 0, storages, &sizes, &mut budget) {
        Ok(())
    } else if budget == 0 {
        // Undecided (pathological layout): do not claim corruption.
        Ok(())
    } else {
        Err(format!(
            "the data of its {storages} storages does not fit the {} bytes after the header (truncated or corrupt file)",
            bytes.len()
        ))
    }
}

/// Depth-first search, with an explicit stack (a checkpoint can hold thousands of
/// storages): can `storages` records starting at `at` end exactly at the end of `data`?
/// Each try of an element size spends one unit of `budget`.
fn walk(data: &[u8], at: usize, storages: usize, sizes: &[usize], budget: &mut usize) -> bool {
    // (position, records still to read, index of the next element size to try there)
    let mut stack = vec![(at, storages, 0usize)];
    while let Some(top) = stack.last_mut() {
        let (pos, left, next) = *top;
        if left == 0 {
            if pos == data.len() {
                return true;
            }
            stack.pop();
            continue;
        }
        if next == sizes.len() || pos + 8 > data.len() {
            stack.pop();
            continue;
        }
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        top.2 += 1;
        let count = u64::from_le_bytes(data[pos..pos + 8].try_into().expect("8 bytes")) as usize;
        let end = count
            .checked_mul(sizes[next])
            .and_then(|n| n.checked_add(pos + 8))
            .filter(|&end| end <= data.len());
        if let Some(end) = end {
            stack.push((end, left - 1, 0));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::walk;

    fn record(count: u64, size: usize) -> Vec<u8> {
        let mut r = count.to_le_bytes().to_vec();
        r.extend(std::iter::repeat_n(7u8, count as usize * size));
        r
    }

    #[test]
    fn records_must_end_exactly_at_the_end() {
        let mut data = record(3, 4);
        data.extend(record(1, 8));
        data.extend(record(2, 4));
        let mut budget = 1000;
        assert!(walk(&data, 0, 3, &[4, 8], &mut budget));
        assert!(!walk(&data[..data.len() - 1], 0, 3, &[4, 8], &mut 1000));
        assert!(!walk(&data, 0, 2, &[4, 8], &mut 1000));
        assert!(!walk(&data, 0, 3, &[4], &mut 1000));
        // Thousands of storages do not recurse.
        let many: Vec<u8> = (0..20_000).flat_map(|_| record(1, 4)).collect();
        assert!(walk(&many, 0, 20_000, &[4, 8], &mut 1_000_000));
    }
}
