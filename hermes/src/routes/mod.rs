//! Hermes' routes, one file per feature area.

pub mod embed;
pub mod llm;
pub mod nlp;
