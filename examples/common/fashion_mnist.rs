//! Fashion-MNIST from Debian's `dataset-fashion-mnist` (IDX files, gzip): where it is, and
//! the first images of chosen classes. Shared by the image examples.
#![allow(dead_code)]

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The ten class names, by label.
pub const NAMES: [&str; 10] = [
    "T-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// Pixels per image (28×28, grey).
pub const PIXELS: usize = 784;

/// The folder of the IDX files (`$FASHION_MNIST_DIR`, else Debian's), or exits with the
/// command that installs them.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var("FASHION_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/share/datasets/fashion-mnist"));
    if !dir.join("train-images-idx3-ubyte.gz").is_file() {
        eprintln!(
            "{} has no Fashion-MNIST; run `apt-get install dataset-fashion-mnist` (or set FASHION_MNIST_DIR)",
            dir.display()
        );
        std::process::exit(2);
    }
    dir
}

fn read_gz(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
}

/// `per_class` images of each of `classes` from a split (`train` or `t10k`), in file order
/// after skipping the first `skip` of each class: pixels (0..=255, [`PIXELS`] each,
/// concatenated) and each image's index in `classes` as its label.
pub fn load(
    dir: &Path,
    split: &str,
    classes: &[u8],
    skip: usize,
    per_class: usize,
) -> (Vec<u8>, Vec<i64>) {
    let images = read_gz(&dir.join(format!("{split}-images-idx3-ubyte.gz")));
    let labels = read_gz(&dir.join(format!("{split}-labels-idx1-ubyte.gz")));
    // IDX headers: 16 bytes for images, 8 for labels.
    let (images, labels) = (&images[16..], &labels[8..]);
    let mut seen = vec![0usize; classes.len()];
    let (mut pixels, mut ys) = (Vec::new(), Vec::new());
    for (i, &label) in labels.iter().enumerate() {
        let Some(c) = classes.iter().position(|&k| k == label) else {
            continue;
        };
        seen[c] += 1;
        if (skip + 1..=skip + per_class).contains(&seen[c]) {
            pixels.extend_from_slice(&images[i * PIXELS..(i + 1) * PIXELS]);
            ys.push(c as i64);
        }
    }
    (pixels, ys)
}
