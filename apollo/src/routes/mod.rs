//! Apollo's routes: the API that performs user actions, and the diagnostics views.

pub mod api;
pub mod diagnostics;
