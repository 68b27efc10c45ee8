//! The first start of a platform creates a system administrator — from AOS_ADMIN_PASSWORD, or
//! with a generated password printed once — and the built-in roles; later starts leave them be.

mod common;

use common::{Aos, cli_ok};

fn start_and_stop(dir: &std::path::Path, admin_password: Option<&str>) -> String {
    let mut aos = Aos::new(dir, &["run", "--roles", "broker"]);
    if let Some(password) = admin_password {
        aos = aos.env("AOS_ADMIN_PASSWORD", password);
    }
    let mut node = aos.spawn();
    node.wait_ready();
    node.signal(libc::SIGTERM);
    let status = node.wait_exit(common::PATIENCE);
    assert!(status.is_some_and(|s| s.success()), "{}", node.stderr());
    // What the operator sees: standard output, and the logs on standard error.
    format!("{}{}", node.stdout(), node.stderr())
}

#[test]
fn the_first_start_prints_a_generated_administrator_password_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = start_and_stop(dir.path(), None);
    let shown: Vec<&str> = first
        .lines()
        .filter(|l| l.contains("system administrator `admin` with password"))
        .collect();
    assert_eq!(shown.len(), 1, "shown exactly once: {first}");
    assert!(shown[0].contains("password "), "{}", shown[0]);
    let second = start_and_stop(dir.path(), None);
    assert!(!second.contains("system administrator `admin`"), "{second}");
    assert!(cli_ok(dir.path(), &["user", "list"]).contains("admin"));
}

#[test]
fn admin_password_from_the_environment_is_used_and_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = start_and_stop(dir.path(), Some("a long enough secret"));
    assert!(!out.contains("a long enough secret"), "{out}");
    assert!(cli_ok(dir.path(), &["user", "list"]).contains("admin"));

    let weak = tempfile::tempdir().expect("tempdir");
    let (status, _, err) = Aos::new(weak.path(), &["run", "--roles", "broker"])
        .env("AOS_ADMIN_PASSWORD", "short")
        .output();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("AOS_ADMIN_PASSWORD must have at least 8 characters"),
        "{err}"
    );
}

#[test]
fn users_get_roles_and_unknown_roles_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    cli_ok(dir.path(), &["tenant", "add", "acme"]);
    cli_ok(
        dir.path(),
        &[
            "user", "add", "olga", "--tenant", "acme", "--role", "operator",
        ],
    );
    let listed = cli_ok(dir.path(), &["user", "list", "--tenant", "acme"]);
    assert!(
        listed.contains("olga") && listed.contains("operator"),
        "{listed}"
    );
    let (status, _, err) = Aos::new(
        dir.path(),
        &[
            "user", "add", "ivan", "--tenant", "acme", "--role", "wizard",
        ],
    )
    .output();
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("no role `wizard`"), "{err}");
    // The refused user was not created half-way.
    assert!(!cli_ok(dir.path(), &["user", "list", "--tenant", "acme"]).contains("ivan"));
    let (status, _, err) = Aos::new(
        dir.path(),
        &[
            "user",
            "add",
            "eve",
            "--tenant",
            "acme",
            "--role",
            "system administrator",
        ],
    )
    .output();
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("role must be `system administrator`"), "{err}");
}

#[test]
fn password_hashing_follows_the_configured_argon2_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Aos::new(dir.path(), &["run", "--roles", "broker"])
        .env("AOS_AUTH__SIGN_IN__HASH_MEMORY_KIB", "8192")
        .env("AOS_AUTH__SIGN_IN__HASH_ITERATIONS", "3")
        .spawn();
    node.wait_ready();
    node.signal(libc::SIGTERM);
    assert!(
        node.wait_exit(common::PATIENCE)
            .is_some_and(|s| s.success())
    );
    let hash = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
            let storage = aos_storage::Storage::connect(
                &aos_storage::StorageConfig::default(),
                &dir.path().join("data"),
            )
            .await
            .expect("database");
            aos_storage::entity::app_user::Entity::find()
                .filter(aos_storage::entity::app_user::Column::Login.eq("admin"))
                .one(storage.db())
                .await
                .expect("query")
                .expect("admin")
                .password_hash
        });
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(hash.contains("m=8192,t=3,p=1"), "{hash}");

    // Parameters argon2 refuses stop start-up and management commands, naming the keys.
    for args in [&["run", "--roles", "broker"][..], &["tenant", "list"][..]] {
        let (status, _, err) = Aos::new(dir.path(), args)
            .env("AOS_AUTH__SIGN_IN__HASH_MEMORY_KIB", "1")
            .output();
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("auth.sign_in"), "{args:?}: {err}");
    }
}
