//! Configuration keys and the environment variables that set them (a leaf: configuration and the
//! messages of other modules name them).

/// Environment variables that configure AOS start with this prefix; nested keys are joined with
/// `__` (`AOS_BROKER__LISTEN` is `broker.listen`). Variables without `__` (such as `AOS_CONFIG`)
/// are not configuration keys.
pub const ENV_PREFIX: &str = "AOS_";

/// The environment variable that sets a dotted key (`broker.listen` → `AOS_BROKER__LISTEN`).
pub fn env_var_for(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}
