//! Whisper's log-mel front end: raw 16 kHz audio → `[n_mels, frames]` features, computed as
//! transformers' `WhisperFeatureExtractor` does.
//!
//! The steps, in its order: pad with zeros (or cut) to `chunk_length` seconds; a short-time
//! Fourier transform with a periodic Hann window of `n_fft` samples every `hop_length`
//! samples, frames centred (the signal reflected by `n_fft / 2` at both ends); the power
//! spectrum through `n_mels` triangular filters on the Slaney mel scale with Slaney's area
//! normalisation (0–8 kHz); the last frame dropped; `log10` of the energies floored at
//! 1e-10; everything below the clip's maximum − 8 raised to it; then `(x + 4) / 4`.
//!
//! Computed on the host in `f64` (the FFT through `rustfft`), as transformers' NumPy path;
//! the features are then handed to the backend.

use crate::error::{Result, TransferError};
use burn::prelude::*;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex;
use serde::{Deserialize, Serialize};

/// The settings of the front end, with `WhisperFeatureExtractor`'s names and defaults (those
/// of every released Whisper but large-v3, which has 128 mel bins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WhisperFeatureConfig {
    /// Number of mel bins (`num_mel_bins` of the model).
    pub feature_size: usize,
    /// Samples per second the audio must have.
    pub sampling_rate: usize,
    /// Samples between two frames.
    pub hop_length: usize,
    /// Seconds every clip is padded or cut to (30 for the released models, whose encoder
    /// takes 3000 frames).
    pub chunk_length: usize,
    /// Samples per frame and FFT size.
    pub n_fft: usize,
}

impl burn::config::Config for WhisperFeatureConfig {}

impl Default for WhisperFeatureConfig {
    fn default() -> Self {
        Self {
            feature_size: 80,
            sampling_rate: 16_000,
            hop_length: 160,
            chunk_length: 30,
            n_fft: 400,
        }
    }
}

impl WhisperFeatureConfig {
    /// Clips of `seconds` instead of 30 (for an encoder with fewer positions:
    /// `max_source_positions = frames / 2`).
    pub fn with_chunk_length(self, seconds: usize) -> Self {
        Self {
            chunk_length: seconds,
            ..self
        }
    }

    /// Samples in a clip.
    pub fn n_samples(&self) -> usize {
        self.chunk_length * self.sampling_rate
    }

    /// Frames per clip (`n_samples / hop_length`).
    pub fn frames(&self) -> usize {
        self.n_samples() / self.hop_length
    }

    /// Checks the sizes, then builds the extractor (the window and the mel filters).
    pub fn init(&self) -> Result<WhisperFeatureExtractor> {
        for (name, value) in [
            ("feature_size", self.feature_size),
            ("sampling_rate", self.sampling_rate),
            ("hop_length", self.hop_length),
            ("chunk_length", self.chunk_length),
        ] {
            if value == 0 {
                return Err(TransferError::config(name, 0, "must be at least 1"));
            }
        }
        if self.n_fft < 4 || self.n_fft / 2 >= self.n_samples() {
            return Err(TransferError::config(
                "n_fft",
                self.n_fft,
                "at least 4 samples, and a half frame shorter than a clip (the reflection at the \
                 ends needs that many samples)",
            ));
        }
        if self.sampling_rate < 16_000 {
            return Err(TransferError::config(
                "sampling_rate",
                self.sampling_rate,
                "the mel filters reach 8 kHz, which needs at least 16 kHz audio",
            ));
        }
        let n = self.n_fft;
        // Periodic Hann window (torch.hann_window's default, transformers' `window_function`).
        let window = (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
            .collect();
        Ok(WhisperFeatureExtractor {
            filters: mel_filters(n / 2 + 1, self.feature_size, self.sampling_rate),
            window,
            config: self.clone(),
        })
    }
}

/// Slaney's mel scale: linear below 1 kHz, logarithmic above.
fn hertz_to_mel(hertz: f64) -> f64 {
    let log_step = 27.0 / 6.4f64.ln();
    if hertz >= 1000.0 {
        15.0 + (hertz / 1000.0).ln() * log_step
    } else {
        3.0 * hertz / 200.0
    }
}

fn mel_to_hertz(mel: f64) -> f64 {
    let log_step = 6.4f64.ln() / 27.0;
    if mel >= 15.0 {
        1000.0 * (log_step * (mel - 15.0)).exp()
    } else {
        200.0 * mel / 3.0
    }
}

/// `[bins, n_mels]` triangular filters between 0 and 8 kHz, centres evenly spaced in mels,
/// each scaled by `2 / (its width in Hz)` (Slaney's constant energy per filter).
fn mel_filters(bins: usize, n_mels: usize, sampling_rate: usize) -> Vec<f64> {
    let linspace = |start: f64, end: f64, n: usize| -> Vec<f64> {
        (0..n)
            .map(|i| start + (end - start) * i as f64 / (n - 1).max(1) as f64)
            .collect()
    };
    let fft_freqs = linspace(0.0, (sampling_rate / 2) as f64, bins);
    let edges: Vec<f64> = linspace(hertz_to_mel(0.0), hertz_to_mel(8000.0), n_mels + 2)
        .into_iter()
        .map(mel_to_hertz)
        .collect();
    let mut filters = vec![0.0; bins * n_mels];
    for (k, &f) in fft_freqs.iter().enumerate() {
        for m in 0..n_mels {
            let down = (f - edges[m]) / (edges[m + 1] - edges[m]);
            let up = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1]);
            let norm = 2.0 / (edges[m + 2] - edges[m]);
            filters[k * n_mels + m] = down.min(up).max(0.0) * norm;
        }
    }
    filters
}

/// Turns raw audio into Whisper's log-mel features (transformers' `WhisperFeatureExtractor`).
#[derive(Debug, Clone)]
pub struct WhisperFeatureExtractor {
    config: WhisperFeatureConfig,
    window: Vec<f64>,
    /// `[n_fft / 2 + 1, feature_size]`.
    filters: Vec<f64>,
}

impl WhisperFeatureExtractor {
    /// The settings it was built with.
    pub fn config(&self) -> &WhisperFeatureConfig {
        &self.config
    }

    /// The features of one clip, `[feature_size, frames]` row-major. An error for a sample
    /// that is not finite.
    pub fn extract(&self, samples: &[f32]) -> Result<Vec<f32>> {
        if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
            return Err(TransferError::config(
                "audio sample",
                format!("{} at index {i}", samples[i]),
                "audio must be finite numbers (16 kHz mono, typically in [-1, 1])",
            ));
        }
        let c = &self.config;
        let (n, hop, n_mels) = (c.n_fft, c.hop_length, c.feature_size);
        let bins = n / 2 + 1;
        let half = n / 2;
        // Pad with zeros or cut to the clip's length, then reflect by half a frame.
        let mut clip: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
        clip.resize(c.n_samples(), 0.0);
        let len = clip.len();
        let padded: Vec<f64> = (0..len + 2 * half)
            .map(|i| {
                let j = i as isize - half as isize;
                let k = if j < 0 {
                    -j
                } else if j >= len as isize {
                    2 * (len as isize - 1) - j
                } else {
                    j
                };
                clip[k as usize]
            })
            .collect();
        let frames = c.frames(); // 1 + len / hop frames, the last one dropped
        let fft = FftPlanner::<f64>::new().plan_fft_forward(n);
        let mut buffer = vec![Complex::new(0.0, 0.0); n];
        let mut scratch = vec![Complex::new(0.0, 0.0); fft.get_inplace_scratch_len()];
        let mut power = vec![0.0f64; bins];
        let mut mel = vec![0.0f64; n_mels * frames];
        for t in 0..frames {
            let frame = &padded[t * hop..t * hop + n];
            for ((b, &x), &w) in buffer.iter_mut().zip(frame).zip(&self.window) {
                *b = Complex::new(x * w, 0.0);
            }
            fft.process_with_scratch(&mut buffer, &mut scratch);
            for (p, z) in power.iter_mut().zip(&buffer) {
                *p = z.norm_sqr();
            }
            for (k, &p) in power.iter().enumerate() {
                let row = &self.filters[k * n_mels..(k + 1) * n_mels];
                for (m, &f) in row.iter().enumerate() {
                    mel[m * frames + t] += f * p;
                }
            }
        }
        let log: Vec<f64> = mel.iter().map(|&e| e.max(1e-10).log10()).collect();
        let floor = log.iter().copied().fold(f64::NEG_INFINITY, f64::max) - 8.0;
        Ok(log
            .into_iter()
            .map(|x| ((x.max(floor) + 4.0) / 4.0) as f32)
            .collect())
    }

    /// The features of several clips as one `[clips, feature_size, frames]` tensor, what
    /// the encoder reads. An error for an empty batch or a sample that is not finite.
    pub fn batch<B: Backend>(&self, clips: &[&[f32]], device: &B::Device) -> Result<Tensor<B, 3>> {
        if clips.is_empty() {
            return Err(TransferError::BatchShape(
                "no audio clips were given".into(),
            ));
        }
        let mut values =
            Vec::with_capacity(clips.len() * self.config.feature_size * self.config.frames());
        for clip in clips {
            values.extend(self.extract(clip)?);
        }
        Ok(Tensor::from_data(
            TensorData::new(
                values,
                [clips.len(), self.config.feature_size, self.config.frames()],
            ),
            device,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scale's two halves meet at 1 kHz (15 mels) and invert each other.
    #[test]
    fn the_slaney_scale_round_trips() {
        assert!((hertz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        for hz in [0.0, 200.0, 999.0, 1000.0, 4321.0, 8000.0] {
            assert!((mel_to_hertz(hertz_to_mel(hz)) - hz).abs() < 1e-9, "{hz}");
        }
    }

    /// A pure tone lights the mel bin around its frequency; silence is the floor everywhere.
    #[test]
    fn a_tone_lights_its_band_and_silence_is_flat() {
        let config = WhisperFeatureConfig::default().with_chunk_length(1);
        let extractor = config.init().unwrap();
        let tone: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let features = extractor.extract(&tone).unwrap();
        assert_eq!(features.len(), 80 * 100);
        let frame = 50;
        let column: Vec<f32> = (0..80).map(|m| features[m * 100 + frame]).collect();
        let loudest = (0..80)
            .max_by(|&a, &b| column[a].total_cmp(&column[b]))
            .unwrap();
        let centre = |m: usize| {
            mel_to_hertz(hertz_to_mel(0.0) + (m + 1) as f64 * hertz_to_mel(8000.0) / 81.0)
        };
        assert!(
            (centre(loudest) - 1000.0).abs() < 120.0,
            "bin {loudest} at {} Hz",
            centre(loudest)
        );
        let silence = extractor.extract(&[]).unwrap();
        assert!(silence.iter().all(|&x| x == silence[0]));
        // log10(1e-10) = -10, raised to max - 8 = -18 (no-op), then (x + 4) / 4.
        assert!((silence[0] - (-1.5)).abs() < 1e-6);
    }

    #[test]
    fn bad_settings_and_samples_are_errors() {
        let config = WhisperFeatureConfig::default();
        for (bad, what) in [
            (
                WhisperFeatureConfig {
                    hop_length: 0,
                    ..config.clone()
                },
                "hop_length",
            ),
            (
                WhisperFeatureConfig {
                    sampling_rate: 8000,
                    ..config.clone()
                },
                "8 kHz",
            ),
            (
                WhisperFeatureConfig {
                    n_fft: 2,
                    ..config.clone()
                },
                "n_fft",
            ),
        ] {
            let err = bad.init().unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        }
        let extractor = config.with_chunk_length(1).init().unwrap();
        let err = extractor.extract(&[0.0, f32::NAN]).unwrap_err().to_string();
        assert!(err.contains("index 1"), "{err}");
        let none: &[&[f32]] = &[];
        assert!(
            extractor
                .batch::<burn::backend::NdArray>(none, &Default::default())
                .is_err()
        );
    }
}
