//! `aos-auth`: authentication and authorization.
//!
//! This first cut holds password hashing (argon2id, PHC strings); users, roles, permissions,
//! tokens and device credentials arrive with the storage-and-auth issue.

pub mod password;
