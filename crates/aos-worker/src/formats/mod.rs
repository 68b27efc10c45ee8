//! Message formats: how a payload becomes platform-message samples.

pub mod json;
