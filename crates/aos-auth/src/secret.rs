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

/// Shortest token-signing key accepted, in bytes.
pub const MIN_TOKEN_KEY: usize = 32;

/// The key that signs access tokens: `configured` (hex), else the one kept in
/// `data_dir/token.key`, created there (owner-only) on first use.
pub fn token_key(configured: Option<&str>, data_dir: &std::path::Path) -> Result<Vec<u8>, String> {
    let parse = |hex_key: &str, source: &str| {
        let key = hex::decode(hex_key.trim()).map_err(|e| {
            format!("{source} is not hex ({e}): generate one with `openssl rand -hex 32`")
        })?;
        if key.len() < MIN_TOKEN_KEY {
            return Err(format!(
                "{source} has {} bytes; it needs at least {MIN_TOKEN_KEY}",
                key.len()
            ));
        }
        Ok(key)
    };
    if let Some(key) = configured {
        return parse(key, "auth.token_key (AOS_AUTH__TOKEN_KEY)");
    }
    let path = data_dir.join("token.key");
    let shown = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(stored) => parse(&stored, &shown),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = generate();
            std::fs::create_dir_all(data_dir)
                .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("cannot create {shown}: {e}"))?;
            file.write_all(key.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write {shown}: {e}"))?;
            parse(&key, &shown)
        }
        Err(err) => Err(format!("cannot read {shown}: {err}")),
    }
}

/// Where a cluster keeps its token-signing key when none is configured.
const SHARED_TOKEN_KEY: &str = "secrets.token_key";

/// The token-signing key of a cluster without `auth.token_key`: kept in the shared key-value
/// store (no TTL), made by the first node that needs it and read by every other one.
pub async fn shared_token_key(kv: &dyn aos_core::Kv) -> Result<Vec<u8>, String> {
    let shown = "the cluster's token key (key-value store)";
    let read = |value: &[u8]| {
        let text = std::str::from_utf8(value).map_err(|_| format!("{shown} is not text"))?;
        hex::decode(text.trim()).map_err(|e| format!("{shown} is not hex ({e})"))
    };
    let failed = |e: aos_core::kv::KvError| format!("cannot read {shown}: {e}");
    if let Some(entry) = kv.get(SHARED_TOKEN_KEY).await.map_err(failed)? {
        return read(&entry.value);
    }
    let key = generate();
    match kv
        .create(SHARED_TOKEN_KEY, key.clone().into_bytes().into(), None)
        .await
    {
        Ok(_) => read(key.as_bytes()),
        // Another node made it first: that one is the cluster's.
        Err(aos_core::kv::KvError::Exists(_)) => {
            match kv.get(SHARED_TOKEN_KEY).await.map_err(failed)? {
                Some(entry) => read(&entry.value),
                None => Err(format!("{shown} vanished while it was made")),
            }
        }
        Err(err) => Err(failed(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nodes_of_a_cluster_share_one_token_key() {
        let kv = aos_core::kv::MemoryKv::new();
        let first = shared_token_key(&kv).await.expect("made");
        let second = shared_token_key(&kv).await.expect("read");
        assert_eq!(first, second);
        assert!(first.len() >= MIN_TOKEN_KEY);
    }

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
