//! Password hashes as PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), so the parameters
//! travel with each hash and can be raised without invalidating stored ones.

use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use argon2::{Algorithm, Argon2, Params, Version};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("not a valid password hash (expected a PHC string such as $argon2id$v=19$...): {0}")]
    MalformedHash(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    /// The OWASP recommendation for argon2id: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        HashParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

fn hasher(params: HashParams) -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| PasswordError::Params(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with a fresh random salt.
pub fn hash_password(password: &str, params: HashParams) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(hasher(params)?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?
        .to_string())
}

/// The fewest characters a password may have.
pub const MIN_CHARS: usize = 8;

/// Whether `password` is long enough to be accepted.
pub fn long_enough(password: &str) -> bool {
    password.chars().count() >= MIN_CHARS
}

/// A new random password (96 bits, as 24 hex characters), to be shown once.
pub fn generate() -> String {
    crate::secret::generate()[..24].to_string()
}

/// [`hash_password`] on a blocking thread: argon2 is deliberately slow, so it stays off the
/// async threads.
pub async fn hash_off_thread(
    password: String,
    params: HashParams,
) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash_password(&password, params))
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?
}

/// [`verify_password`] on a blocking thread (a failed task is a [`PasswordError::Hash`]).
pub async fn verify_off_thread(password: String, hash: String) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?
}

/// Whether `password` matches `hash` (with the parameters recorded in the hash).
pub fn verify_password(password: &str, hash: &str) -> Result<bool, PasswordError> {
    let parsed =
        PasswordHash::new(hash).map_err(|e| PasswordError::MalformedHash(e.to_string()))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: HashParams = HashParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("correct horse", FAST).expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash).expect("verify"));
        assert!(!verify_password("wrong", &hash).expect("verify"));
        assert_ne!(
            hash,
            hash_password("correct horse", FAST).expect("hash"),
            "salted"
        );
    }

    #[test]
    fn a_malformed_hash_is_an_error_not_a_mismatch() {
        assert!(matches!(
            verify_password("x", "plaintext"),
            Err(PasswordError::MalformedHash(_))
        ));
    }
}
