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

/// The SHA-256 of a certificate's DER bytes, as hex: how a client certificate names a device.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The fingerprint of the first certificate in a PEM file (`None` when it holds none).
pub fn certificate_fingerprint_pem(pem: &[u8]) -> Option<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let cert = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    Some(certificate_fingerprint(&cert))
}

/// The key's first characters, shown in lists to tell keys apart (not enough to guess it).
pub fn shown_prefix(secret: &str) -> String {
    secret.chars().take(8).collect()
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
