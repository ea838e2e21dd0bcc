//! apollo
