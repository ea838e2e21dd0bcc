//! Deterministic local text embeddings by feature hashing.
//!
//! Every lower-cased word and every character 3-gram of a word (with `<` and `>` boundary markers) is
//! hashed into one of [`EMBEDDING_DIMENSION`] buckets with a hash-derived sign, and the vector is
//! L2-normalised. The same text gives the same vector on every machine and every build, needs no
//! model download, and texts that share words or word pieces land close together in cosine terms.
//! It is not a semantic model: it knows spelling, not meaning.
//!
//! The hash is FNV-1a 64 followed by the MurmurHash3 finaliser, written here because std's
//! `DefaultHasher` is explicitly unstable across Rust releases, and pulling a hashing crate for
//! fifteen lines was not worth a dependency.

use crate::text::TextError;

/// Number of dimensions of every embedding this module produces.
pub const EMBEDDING_DIMENSION: usize = 384;

/// Name of the one model this module implements; requests may name it or leave it out.
pub const DEFAULT_MODEL: &str = "feature-hash-384";

/// Every model name [`embed`] accepts.
pub const KNOWN_MODELS: &[&str] = &[DEFAULT_MODEL];

/// Weight of a whole-word feature; character n-grams weigh less so that shared words dominate
/// shared word pieces.
const WORD_WEIGHT: f32 = 1.0;
const NGRAM_WEIGHT: f32 = 0.5;
const NGRAM_SIZE: usize = 3;

/// Why a text could not be embedded. Every variant is a client error (bad input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The text is empty, only whitespace (no features to normalise), or too long.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The request named a model this service does not have.
    #[error("unknown embedding model {model:?}; known models: {}", KNOWN_MODELS.join(", "))]
    UnknownModel {
        /// The model name as requested.
        model: String,
    },
    /// The text's features cancelled out to a zero vector (astronomically unlikely, but a zero
    /// vector cannot be normalised, so it is reported rather than returned).
    #[error("text has no embeddable features")]
    NoFeatures,
}

impl EmbedError {
    /// A stable machine-readable code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Text(error) => error.code(),
            Self::UnknownModel { .. } => "unknown_model",
            Self::NoFeatures => "no_features",
        }
    }
}

/// A unit-length embedding and the model that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The vector, [`EMBEDDING_DIMENSION`] long, with L2 norm 1.
    pub vector: Vec<f32>,
    /// The model name, one of [`KNOWN_MODELS`].
    pub model: &'static str,
}

impl Embedding {
    /// Number of dimensions of the vector.
    pub fn dimension(&self) -> usize {
        self.vector.len()
    }
}

/// Resolves an optional requested model name to a known one.
///
/// # Errors
/// [`EmbedError::UnknownModel`] when the name is not one of [`KNOWN_MODELS`].
pub fn resolve_model(requested: Option<&str>) -> Result<&'static str, EmbedError> {
    match requested {
        None => Ok(DEFAULT_MODEL),
        Some(name) => KNOWN_MODELS
            .iter()
            .copied()
            .find(|known| *known == name)
            .ok_or_else(|| EmbedError::UnknownModel {
                model: name.to_owned(),
            }),
    }
}

/// Embeds `text` with the requested model (the default when `None`), inside a `hermes.embed` span.
///
/// # Errors
/// [`EmbedError`] for an unknown model, an empty or whitespace-only text, or a text longer than
/// [`crate::text::MAX_TEXT_CHARS`].
pub fn embed(text: &str, model: Option<&str>) -> Result<Embedding, EmbedError> {
    let length = text.chars().count();
    let model = resolve_model(model);
    // The fields are known before the work starts: given when the span is created rather than
    // recorded after, as each `record` is one more pass through every layer.
    let span = tracing::info_span!(
        "hermes.embed",
        embedding.model = model.as_ref().ok().copied(),
        embedding.dimension = EMBEDDING_DIMENSION as i64,
        embedding.text_length = i64::try_from(length).unwrap_or(i64::MAX),
    );
    let _entered = span.enter();
    let model = model?;
    crate::text::check(text, length)?;
    let vector = feature_hash(text);
    Ok(Embedding { vector, model })
}

/// Cosine similarity of two vectors of the same length; 0 when either has zero norm.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut norm_a, mut norm_b) = (0.0_f32, 0.0_f32, 0.0_f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        norm_a += x * x;
        norm_b += y * y;
    }
    if norm_a == 0.0 || norm_b == 0.0 {
        return 0.0;
    }
    dot / (norm_a.sqrt() * norm_b.sqrt())
}

/// FNV-1a 64 of `bytes` followed by the MurmurHash3 64-bit finaliser.
///
/// Stable across platforms and releases. The finaliser spreads FNV's weakly mixed high bits, which
/// matter because the sign of a feature comes from the top bit.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

fn feature_hash(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0_f32; EMBEDDING_DIMENSION];
    // One buffer reused for every feature keeps allocation per text, not per feature.
    let mut feature = String::new();
    for word in words(text) {
        feature.clear();
        feature.push_str("w:");
        feature.push_str(&word);
        add_feature(&mut vector, &feature, WORD_WEIGHT);

        let marked: Vec<char> = std::iter::once('<')
            .chain(word.chars())
            .chain(std::iter::once('>'))
            .collect();
        for gram in marked.windows(NGRAM_SIZE) {
            feature.clear();
            feature.push_str("c:");
            feature.extend(gram);
            add_feature(&mut vector, &feature, NGRAM_WEIGHT);
        }
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

fn add_feature(vector: &mut [f32], feature: &str, weight: f32) {
    let hash = stable_hash(feature.as_bytes());
    // The modulus of a u64 by 384 always fits in usize.
    let index = usize::try_from(hash % EMBEDDING_DIMENSION as u64).unwrap_or(0);
    let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
    vector[index] += sign * weight;
}

/// Lower-cased whitespace-separated words with surrounding punctuation trimmed; a token that is
/// only punctuation is kept whole so that texts like "?!" still have features.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_whitespace().map(|token| {
        let trimmed = token.trim_matches(|c: char| !c.is_alphanumeric());
        let word = if trimmed.is_empty() { token } else { trimmed };
        word.to_lowercase()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::MAX_TEXT_CHARS;

    fn vector(text: &str) -> Vec<f32> {
        embed(text, None).expect("text embeds").vector
    }

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    #[test]
    fn same_text_gives_the_same_vector() {
        let first = vector("Pick up the red block");
        let second = vector("Pick up the red block");
        assert_eq!(first, second);
    }

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Pinned values: a change here changes every stored embedding.
        assert_eq!(stable_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(stable_hash(b"w:block"), 0xc85d_216e_4a9b_a43f);
        assert_ne!(stable_hash(b"w:block"), stable_hash(b"c:block"));
    }

    #[test]
    fn vectors_have_the_dimension_and_unit_norm() {
        for text in [
            "a",
            "Pick up the red block",
            "?!",
            "éàü ÆØÅ 123",
            &"word ".repeat(5000),
        ] {
            let embedding = embed(text, None).expect("text embeds");
            assert_eq!(embedding.dimension(), EMBEDDING_DIMENSION);
            assert_eq!(embedding.model, DEFAULT_MODEL);
            assert!((norm(&embedding.vector) - 1.0).abs() < 1e-5, "{text:?}");
        }
    }

    #[test]
    fn similar_texts_are_closer_than_unrelated_ones() {
        let anchor = vector("pick up the red block");
        let similar = vector("pick up the blue block");
        let unrelated = vector("quarterly revenue forecast meeting notes");
        let near = cosine_similarity(&anchor, &similar);
        let far = cosine_similarity(&anchor, &unrelated);
        assert!(near > far + 0.3, "near {near}, far {far}");
        assert!((cosine_similarity(&anchor, &anchor) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn case_and_surrounding_punctuation_do_not_matter() {
        assert_eq!(vector("Red block!"), vector("red BLOCK"));
    }

    #[test]
    fn empty_and_whitespace_text_is_rejected() {
        assert_eq!(embed("", None), Err(TextError::Empty.into()));
        assert_eq!(embed(" \n\t ", None), Err(TextError::Empty.into()));
    }

    #[test]
    fn over_long_text_is_rejected() {
        let text = "a".repeat(MAX_TEXT_CHARS + 1);
        assert_eq!(
            embed(&text, None),
            Err(EmbedError::Text(TextError::TooLong {
                length: MAX_TEXT_CHARS + 1,
                limit: MAX_TEXT_CHARS
            }))
        );
        assert!(embed(&"a".repeat(MAX_TEXT_CHARS), None).is_ok());
    }

    #[test]
    fn only_known_models_are_accepted() {
        assert!(embed("hello", Some(DEFAULT_MODEL)).is_ok());
        let err = embed("hello", Some("text-embedding-3-small")).expect_err("unknown model");
        assert_eq!(err.code(), "unknown_model");
        assert!(err.to_string().contains(DEFAULT_MODEL), "{err}");
    }
}
