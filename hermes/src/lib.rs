//! Hermes, the language services of LOGOS: deterministic local text embeddings and a vector store
//! to search them, rule-based NLP that splits goals into the clauses Sophia plans with, and chat
//! completions from a local echo model or any OpenAI-compatible API. The domain modules (`embed`,
//! `vector_store`, `nlp`, `llm`, and `text`, the text check embedding and NLP share) are free of
//! HTTP; `routes` and `error` translate them to the API.

pub mod app;
pub mod config;
pub mod embed;
pub mod error;
pub mod llm;
pub mod nlp;
pub mod routes;
pub mod text;
pub mod vector_store;
