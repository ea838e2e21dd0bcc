//! Apollo's API routes.

pub mod api;
