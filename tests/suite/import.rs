//! Weight import: PyTorch layout, remapping, partial loads, the report, strict mode, dtypes,
//! and broken files (errors, never panics).

use crate::common::{Inner, device, zip_pth_fixture};
use burn::prelude::*;
use burn_transfer::checkpoint::save_pytorch_safetensors;
use burn_transfer::import::{ImportOptions, import_weights, inspect_weights};
use burn_transfer::prelude::*;
use safetensors::{Dtype, tensor::TensorView};
use std::path::Path;

/// Writes raw little-endian tensors with the given dtypes (what `safetensors.torch.save_file`
/// produces for a state dict).
pub fn write_raw(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, d, s, b)| (k.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37).sin() * scale).collect()
}

fn net() -> MlpBackbone<Inner> {
    MlpBackbone::new(&[3, 4, 2], &device()).unwrap()
}

fn input() -> Tensor<Inner, 2> {
    Tensor::from_floats([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], &device())
}

#[test]
fn pytorch_layout_round_trip_is_bitwise_and_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    let original = net();
    save_pytorch_safetensors(&original, &path).unwrap();
    // The file is in PyTorch's layout: Linear weights [out, in].
    let stored = inspect_weights(&path, &ImportOptions::new()).unwrap();
    let w0 = stored.iter().find(|t| t.key == "layers.0.weight").unwrap();
    assert_eq!(w0.shape, vec![4, 3]);

    let (loaded, report) =
        import_weights(net(), &path, &ImportOptions::new().with_strict(true)).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.loaded.len(), 4);
    let a = original.features(input()).into_data();
    let b = loaded.features(input()).into_data();
    assert_eq!(a, b, "outputs must be bitwise equal after the round trip");
}

#[test]
fn remapping_partial_loading_and_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sd.safetensors");
    // A PyTorch-style state dict: `net.0` instead of `layers.0`, no second layer, an extra
    // buffer and an extra unknown tensor.
    write_raw(
        &path,
        &[
            (
                "net.0.weight",
                Dtype::F32,
                vec![4, 3],
                f32_bytes(&ramp(12, 1.0)),
            ),
            ("net.0.bias", Dtype::F32, vec![4], f32_bytes(&ramp(4, 0.1))),
            (
                "net.0.num_batches_tracked",
                Dtype::I64,
                vec![],
                7i64.to_le_bytes().to_vec(),
            ),
            ("extra.weight", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0])),
        ],
    );
    let options = ImportOptions::new()
        .with_remap(r"^net\.", "layers.")
        .unwrap()
        .with_ignore("num_batches_tracked$")
        .unwrap();
    let before = net();
    let second_layer_before = before.layers[1].weight.val().into_data();
    let (model, report) = import_weights(before, &path, &options).unwrap();
    assert_eq!(report.loaded, vec!["layers.0.bias", "layers.0.weight"]);
    assert_eq!(report.missing, vec!["layers.1.bias", "layers.1.weight"]);
    assert_eq!(report.unexpected, vec!["extra.weight"]);
    assert_eq!(report.ignored, vec!["layers.0.num_batches_tracked"]);
    assert!(!report.is_clean());
    // PyTorch's [out, in] was transposed into burn's [in, out].
    let w = model.layers[0]
        .weight
        .val()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let src = ramp(12, 1.0);
    assert_eq!(w[1], src[3], "w[in=0, out=1] = torch[out=1, in=0]");
    // Missing parameters keep their values.
    assert_eq!(
        model.layers[1].weight.val().into_data(),
        second_layer_before
    );

    // Strict mode: the same load is an error naming the keys.
    let err = import_weights(net(), &path, &options.clone().with_strict(true))
        .unwrap_err()
        .to_string();
    for key in ["layers.1.weight", "layers.1.bias", "extra.weight"] {
        assert!(err.contains(key), "{key} not named in: {err}");
    }

    // `only` loads a subset and lists the rest as not selected, without counting them missing.
    let (_, report) = import_weights(
        net(),
        &path,
        &options.clone().with_only("layers.0").unwrap(),
    )
    .unwrap();
    assert_eq!(report.loaded.len(), 2);
    assert!(report.missing.is_empty(), "{report}");
    assert_eq!(report.not_selected.len(), 2);
    // A selector that matches nothing is an error, as everywhere.
    assert!(ImportOptions::new().with_only("nope").is_ok());
    assert!(import_weights(net(), &path, &options.with_only("nope").unwrap()).is_err());
}

#[test]
fn shape_and_dtype_problems_are_reported_and_half_precision_is_converted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sd.safetensors");
    let half: Vec<u8> = [0.5f32, -1.0, 2.0, 0.25]
        .iter()
        .flat_map(|v| half_bits(*v).to_le_bytes())
        .collect();
    write_raw(
        &path,
        &[
            (
                "layers.0.weight",
                Dtype::F32,
                vec![5, 3],
                f32_bytes(&ramp(15, 1.0)),
            ),
            ("layers.0.bias", Dtype::F16, vec![4], half),
            ("layers.1.weight", Dtype::I64, vec![2, 4], vec![0u8; 64]),
            (
                "layers.1.bias",
                Dtype::F32,
                vec![2],
                f32_bytes(&[1.0, -1.0]),
            ),
        ],
    );
    let (model, report) = import_weights(net(), &path, &ImportOptions::new()).unwrap();
    assert_eq!(report.mismatched.len(), 1, "{report}");
    assert_eq!(report.mismatched[0].key, "layers.0.weight");
    assert_eq!(report.mismatched[0].expected, vec![3, 4]);
    assert_eq!(report.mismatched[0].found, vec![3, 5]);
    assert_eq!(report.unreadable.len(), 1, "{report}");
    assert!(report.unreadable[0].1.contains("I64"), "{report}");
    assert_eq!(report.converted.len(), 1);
    let bias = model.layers[0].bias.as_ref().unwrap().val().into_data();
    assert_eq!(bias.to_vec::<f32>().unwrap(), vec![0.5, -1.0, 2.0, 0.25]);
    assert_eq!(bias.dtype, burn::tensor::DType::F32);
    let err = import_weights(net(), &path, &ImportOptions::new().with_strict(true))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shape mismatch for `layers.0.weight`"),
        "{err}"
    );
    assert!(err.contains("layers.1.weight"), "{err}");
}

/// IEEE half bits for values exactly representable (enough for the test).
fn half_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mantissa = ((bits >> 13) & 0x3ff) as u16;
    if v == 0.0 {
        sign
    } else {
        sign | ((exp as u16) << 10) | mantissa
    }
}

#[test]
fn missing_and_corrupt_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let err = import_weights(net(), dir.path().join("absent.pth"), &ImportOptions::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.pth"), "{err}");

    let path = dir.path().join("mlp.safetensors");
    save_pytorch_safetensors(&net(), &path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let broken = dir.path().join("broken.safetensors");
    // Truncations and flipped bytes in the header length, the JSON header and the data.
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let cuts = [
        0,
        4,
        8,
        20,
        8 + header_len / 2,
        8 + header_len + 4,
        good.len() - 1,
    ];
    for cut in cuts {
        std::fs::write(&broken, &good[..cut]).unwrap();
        let result = import_weights(net(), &broken, &ImportOptions::new().with_strict(true));
        assert!(result.is_err(), "truncated at {cut} must be an error");
    }
    for offset in [0, 3, 9, 15, 8 + header_len / 3, 8 + header_len - 2] {
        let mut bytes = good.clone();
        bytes[offset] ^= 0xA5;
        std::fs::write(&broken, &bytes).unwrap();
        // Some flips still parse (e.g. inside a number); none may panic, and whatever loads
        // must be reported.
        if let Ok((_, report)) = import_weights(net(), &broken, &ImportOptions::new()) {
            assert!(report.loaded.len() <= 4, "{report}");
        }
    }
    std::fs::write(&broken, b"not a weights file at all").unwrap();
    let err = import_weights(net(), &broken, &ImportOptions::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neither safetensors nor a PyTorch file"),
        "{err}"
    );
}

#[test]
fn zip_format_pth_loads_with_pytorch_layout() {
    let (path, options) = zip_pth_fixture();
    let (model, report) = import_weights(net(), &path, &options).unwrap();
    assert_eq!(report.loaded.len(), 4, "{report}");
    let get = |t: Tensor<Inner, 2>| t.into_data().to_vec::<f32>().unwrap();
    // burn stores [in, out]: element (i, o) is PyTorch's (o, i).
    let w0 = get(model.layers[0].weight.val());
    for i in 0..3 {
        for o in 0..4 {
            assert_eq!(w0[i * 4 + o], o as f32 + i as f32 / 10.0, "w0[{i}][{o}]");
        }
    }
    let w1 = get(model.layers[1].weight.val());
    for i in 0..4 {
        for o in 0..2 {
            assert_eq!(w1[i * 2 + o], o as f32 - i as f32 / 100.0, "w1[{i}][{o}]");
        }
    }
    let b1 = model.layers[1].bias.as_ref().unwrap().val().into_data();
    assert_eq!(b1.to_vec::<f32>().unwrap(), vec![0.5, -0.5]);

    let good = std::fs::read(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.pth");
    for cut in [2, 30, good.len() / 2, good.len() - 30, good.len() - 1] {
        std::fs::write(&broken, &good[..cut]).unwrap();
        assert!(
            import_weights(net(), &broken, &options).is_err(),
            "cut at {cut} must be an error"
        );
    }
}
