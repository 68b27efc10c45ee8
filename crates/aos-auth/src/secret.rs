//! Random secrets (device tokens, API keys, generated passwords) and their lookup hashes.
//!
//! A secret of 256 random bits needs no slow hash: its SHA-256 is stored and looked up
//! directly. People's passwords use argon2id instead (see `password`).

use argon2::password_hash::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

/// A new random secret: 32 bytes from the OS, as 64 hex characters.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The SHA-256 of `secret`, as hex: what storage keeps and looks secrets up by.
pub fn lookup_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hashes_stable() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(lookup_hash(&a), lookup_hash(&a));
        assert_ne!(lookup_hash(&a), lookup_hash(&b));
        assert_eq!(
            lookup_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
