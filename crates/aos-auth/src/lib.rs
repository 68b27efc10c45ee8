//! `aos-auth`: authentication and authorization.
//!
//! Password hashing (argon2id, PHC strings) and random secrets with their lookup hashes.

pub mod password;
pub mod secret;
