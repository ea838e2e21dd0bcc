//! The two Hermes calls planning needs, typed.

use foundry::http::{Downstream, DownstreamError};
use serde::Deserialize;

/// Hermes, as Sophia uses it.
#[derive(Clone, Debug)]
pub struct Hermes {
    downstream: Downstream,
}

#[derive(Deserialize)]
struct NlpAnswer {
    #[serde(default)]
    sentences: Vec<String>,
}

#[derive(Deserialize)]
struct EmbedAnswer {
    embedding_id: String,
}

impl Hermes {
    /// Hermes behind `downstream`.
    pub fn new(downstream: Downstream) -> Self {
        Self { downstream }
    }

    /// Splits `text` into clauses (`POST /simple_nlp` with `sentences`).
    pub async fn clauses(&self, text: &str) -> Result<Vec<String>, DownstreamError> {
        let answer: NlpAnswer = self
            .downstream
            .post_json(
                "/simple_nlp",
                &serde_json::json!({"text": text, "operations": ["sentences"]}),
            )
            .await?;
        Ok(answer.sentences)
    }

    /// Embeds `text` and returns the stored embedding's id (`POST /embed_text`).
    pub async fn embed(&self, text: &str) -> Result<String, DownstreamError> {
        let answer: EmbedAnswer = self
            .downstream
            .post_json("/embed_text", &serde_json::json!({"text": text}))
            .await?;
        Ok(answer.embedding_id)
    }
}
