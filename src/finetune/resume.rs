//! The resumable state of a training run, in one file written atomically.
//!
//! A run that is killed and resumed must end bitwise where an uninterrupted run ends, so the
//! file holds everything that evolves: the model, each optimizer group's state (Adam moments,
//! momentum), the epoch reached, the optimizer step count, the best-so-far tracker and the
//! history. The learning-rate schedule is a pure function of (epoch, progress) and the
//! unfreeze schedule a pure function of the epoch, so the epoch restores both; the random
//! generator is re-seeded from the run's seed at every epoch start, so the epoch restores it
//! too. One file, one rename: a crash leaves the previous epoch's state or the new one,
//! never a mix of model from one epoch and optimizer from another. A CRC-32 over the whole
//! file turns a damaged byte into an error instead of a model with other weights.

use super::History;
use crate::checkpoint::checked;
use crate::error::{Result, TransferError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The first section of the file; the version changes with the layout.
const MAGIC: &[u8] = b"burn-transfer resume v2\n";

/// The first bytes of the layout before checksums.
const MAGIC_V1: &[u8] = b"burn-transfer resume v1\n";

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
    /// Whether early stopping ended the run at `epoch`: resuming it trains no further.
    #[serde(default)]
    pub stopped_early: bool,
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
    /// Serialises the state: magic, JSON header, model, then one section per optimizer
    /// group, sealed with a checksum.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = serde_json::to_vec(self).map_err(|e| TransferError::Export {
            format: "resume state".into(),
            reason: e.to_string(),
        })?;
        let mut sections: Vec<&[u8]> = vec![MAGIC, &header, &self.model];
        sections.extend(self.optimizer.iter().map(Vec::as_slice));
        Ok(checked::seal(&sections))
    }

    /// Parses [`to_bytes`](Self::to_bytes)'s output; anything truncated, damaged or
    /// malformed is an error naming `path`.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        if bytes.starts_with(MAGIC_V1) {
            return Err(corrupt(
                path,
                "written by an older version of burn-transfer, without a checksum",
            ));
        }
        let sections = checked::open_sealed(bytes, path)?;
        let [magic, header, model, optimizer @ ..] = &sections[..] else {
            return Err(corrupt(path, "too few sections"));
        };
        if *magic != MAGIC {
            return Err(corrupt(path, "wrong magic"));
        }
        let mut state: ResumeState =
            serde_json::from_slice(header).map_err(|_| corrupt(path, "header"))?;
        state.model = model.to_vec();
        state.optimizer = optimizer.iter().map(|g| g.to_vec()).collect();
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
            stopped_early: true,
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
