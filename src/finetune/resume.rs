//! The resumable state of a training run, in one file written atomically.
//!
//! A run that is killed and resumed must end bitwise where an uninterrupted run ends, so the
//! file holds everything that evolves: the model, each optimizer group's state (Adam moments,
//! momentum), the epoch reached, the optimizer step count, the best-so-far tracker and the
//! history. The learning-rate schedule is a pure function of (epoch, progress) and the
//! unfreeze schedule a pure function of the epoch, so the epoch restores both; the random
//! generator is re-seeded from the run's seed at every epoch start, so the epoch restores it
//! too. One file, one rename: a crash leaves the previous epoch's state or the new one,
//! never a mix of model from one epoch and optimizer from another.

use super::History;
use crate::error::{Result, TransferError};
use serde::{Deserialize, Serialize};
use std::path::Path;

const MAGIC: &[u8] = b"burn-transfer resume v1\n";

/// The file name inside a checkpoint folder.
pub const RESUME_FILE: &str = "resume.bin";

/// What a run needs to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeState {
    /// The last completed epoch (1-based).
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub steps: usize,
    /// Best epoch and value of the monitored metric so far.
    pub best: Option<(usize, f64)>,
    /// Epochs since the best one (early stopping's counter).
    pub epochs_since_best: usize,
    /// Every completed epoch's metrics.
    pub history: History,
    /// The model's weights (burn's named MessagePack, full precision).
    #[serde(skip)]
    pub model: Vec<u8>,
    /// Each optimizer group's state, in group order.
    #[serde(skip)]
    pub optimizer: Vec<Vec<u8>>,
}

fn corrupt(path: &Path, what: &str) -> TransferError {
    TransferError::Checkpoint {
        path: path.to_path_buf(),
        reason: format!(
            "not a complete resume file ({what}); delete it to start over, or point the run at another checkpoint folder"
        ),
    }
}

impl ResumeState {
    /// Serialises the state: magic, JSON header, model, optimizer groups (each length-prefixed).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = serde_json::to_vec(self).map_err(|e| TransferError::Export {
            format: "resume state".into(),
            reason: e.to_string(),
        })?;
        let mut out = MAGIC.to_vec();
        let mut push = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        push(&header);
        push(&self.model);
        push(&(self.optimizer.len() as u64).to_le_bytes());
        for group in &self.optimizer {
            push(group);
        }
        Ok(out)
    }

    /// Parses [`to_bytes`](Self::to_bytes)'s output; anything truncated or malformed is an
    /// error naming `path`.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| corrupt(path, "wrong magic"))?;
        let mut cursor = rest;
        let mut take = |what: &str| -> Result<&[u8]> {
            if cursor.len() < 8 {
                return Err(corrupt(path, what));
            }
            let (len, tail) = cursor.split_at(8);
            let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
            if tail.len() < len {
                return Err(corrupt(path, what));
            }
            let (chunk, tail) = tail.split_at(len);
            cursor = tail;
            Ok(chunk)
        };
        let mut state: ResumeState =
            serde_json::from_slice(take("header")?).map_err(|_| corrupt(path, "header"))?;
        state.model = take("model")?.to_vec();
        let groups = take("group count")?;
        let groups = u64::from_le_bytes(
            groups
                .try_into()
                .map_err(|_| corrupt(path, "group count"))?,
        ) as usize;
        state.optimizer = (0..groups)
            .map(|_| take("optimizer state").map(<[u8]>::to_vec))
            .collect::<Result<_>>()?;
        if !cursor.is_empty() {
            return Err(corrupt(path, "trailing bytes"));
        }
        Ok(state)
    }

    /// Writes the state atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::checkpoint::atomic_write(path, &self.to_bytes()?)
    }

    /// Reads the state from `path`; `Ok(None)` when there is no such file (a fresh run).
    pub fn load(path: &Path) -> Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => Self::from_bytes(&bytes, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TransferError::io("read resume state", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_truncation_is_an_error() {
        let state = ResumeState {
            epoch: 3,
            steps: 42,
            best: Some((2, 0.5)),
            epochs_since_best: 1,
            history: History::default(),
            model: vec![1, 2, 3, 4, 5],
            optimizer: vec![vec![9; 7], vec![]],
        };
        let bytes = state.to_bytes().unwrap();
        let path = Path::new("resume.bin");
        assert_eq!(ResumeState::from_bytes(&bytes, path).unwrap(), state);
        for cut in 0..bytes.len() {
            assert!(
                ResumeState::from_bytes(&bytes[..cut], path).is_err(),
                "cut {cut}"
            );
        }
    }
}
