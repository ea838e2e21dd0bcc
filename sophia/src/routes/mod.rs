//! Sophia's routes, one file per feature area.

pub mod hcg;
pub mod plan;
pub mod simulate;
pub mod state;
