//! Sign-in, tokens, throttling, password change and reset, on SQLite and PostgreSQL.

use std::net::IpAddr;
use std::time::Duration;

use aos_auth::accounts::{Accounts, SignInError, SignInSettings};
use aos_auth::bootstrap::ensure_roles;
use aos_auth::password::{HashParams, hash_password};
use aos_auth::permissions::{Access, Grants, Level, ObjectKind, Operation, authorize};
use aos_storage::Storage;
use aos_storage::repo::audit;
use aos_storage::repo::paging::Page;
use aos_storage::repo::roles;
use aos_storage::repo::users::{self, NewUser};
use aos_storage::repo::{Scope, tenants};

aos_storage::on_both_databases!(
    signing_in_gives_tokens_that_carry_the_users_roles,
    refresh_tokens_rotate_and_a_replay_revokes_the_family,
    failed_sign_ins_are_throttled_per_account_and_per_address,
    password_change_and_reset_revoke_sessions,
    a_tenants_own_role_decides_its_users_permissions,
);

const FAST: HashParams = HashParams {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

/// Tenants `acme` and `globex`; users `olga` (acme operator) and `gus` (globex tenant
/// administrator), both with password "password1".
async fn accounts(storage: &Storage, settings: SignInSettings) -> Accounts {
    ensure_roles(storage).await.expect("roles");
    for (tenant, login, role) in [
        ("acme", "olga", "operator"),
        ("globex", "gus", "tenant administrator"),
    ] {
        let t = tenants::create(storage, tenant).await.expect("tenant");
        users::create(
            storage,
            Scope::tenant(t.id),
            NewUser {
                login: login.into(),
                name: login.into(),
                password_hash: hash_password("password1", FAST).expect("hash"),
                roles: vec![role.into()],
                ..Default::default()
            },
        )
        .await
        .expect("user");
    }
    let settings = SignInSettings {
        hash_memory_kib: FAST.memory_kib,
        hash_iterations: FAST.iterations,
        hash_parallelism: FAST.parallelism,
        ..settings
    };
    Accounts::new(
        storage.clone(),
        settings,
        &[7u8; 32],
        std::sync::Arc::new(aos_core::kv::MemoryKv::new()),
    )
    .await
    .expect("accounts")
}

fn addr(last: u8) -> Option<IpAddr> {
    Some(IpAddr::from([192, 0, 2, last]))
}

async fn signing_in_gives_tokens_that_carry_the_users_roles(storage: &Storage) {
    let accounts = accounts(storage, SignInSettings::default()).await;
    let tokens = accounts
        .sign_in("olga", "password1", addr(1))
        .await
        .expect("sign in");
    assert_eq!(tokens.expires_in, 15 * 60);
    let claims = accounts.verify(&tokens.access_token).expect("valid token");
    assert_eq!(claims.sub, "olga");
    let subject = accounts.subject(&claims).await.expect("subject");
    assert_eq!(subject.grants.level(ObjectKind::Devices), Level::Manage);
    assert_eq!(subject.grants.level(ObjectKind::Users), Level::None);
    // A tampered or foreign token is refused.
    let mut tampered = tokens.access_token.clone();
    tampered.push('x');
    assert!(matches!(
        accounts.verify(&tampered),
        Err(SignInError::InvalidToken)
    ));
    let other = Accounts::new(
        storage.clone(),
        SignInSettings::default(),
        &[9u8; 32],
        std::sync::Arc::new(aos_core::kv::MemoryKv::new()),
    )
    .await
    .expect("accounts");
    assert!(matches!(
        other.verify(&tokens.access_token),
        Err(SignInError::InvalidToken)
    ));
    // Wrong password and unknown login look the same.
    for (login, password) in [("olga", "nope"), ("nobody", "password1")] {
        let err = accounts
            .sign_in(login, password, addr(1))
            .await
            .expect_err("refused");
        assert_eq!(err.to_string(), "wrong login or password");
    }
    let (events, _) = audit::search(storage, subject.tenant, &Default::default(), &newest(10))
        .await
        .expect("audit");
    assert!(events.iter().any(|e| e.action == "sign_in" && e.success));
    assert!(events.iter().any(|e| e.action == "sign_in" && !e.success));
}

async fn refresh_tokens_rotate_and_a_replay_revokes_the_family(storage: &Storage) {
    let accounts = accounts(storage, SignInSettings::default()).await;
    let first = accounts
        .sign_in("olga", "password1", None)
        .await
        .expect("sign in");
    let second = accounts
        .refresh(&first.refresh_token)
        .await
        .expect("refresh");
    assert_ne!(first.refresh_token, second.refresh_token);
    // The rotated-away token is a replay: refused, and the whole family goes with it.
    assert!(matches!(
        accounts.refresh(&first.refresh_token).await,
        Err(SignInError::InvalidToken)
    ));
    assert!(matches!(
        accounts.refresh(&second.refresh_token).await,
        Err(SignInError::InvalidToken)
    ));
    // Signing out ends a session.
    let session = accounts
        .sign_in("olga", "password1", None)
        .await
        .expect("sign in");
    accounts
        .sign_out(&session.refresh_token)
        .await
        .expect("sign out");
    assert!(matches!(
        accounts.refresh(&session.refresh_token).await,
        Err(SignInError::InvalidToken)
    ));
    assert!(matches!(
        accounts.refresh("garbage").await,
        Err(SignInError::InvalidToken)
    ));
    let tenant = tenants::by_name(storage, "acme").await.expect("acme").id;
    let (events, _) = audit::search(storage, Some(tenant), &Default::default(), &newest(20))
        .await
        .expect("audit");
    assert!(
        events
            .iter()
            .any(|e| e.action == "token.reuse" && e.actor == "user:olga"),
        "a replay is audited against its user"
    );
}

async fn failed_sign_ins_are_throttled_per_account_and_per_address(storage: &Storage) {
    let settings = SignInSettings {
        max_failures: 3,
        max_failures_per_address: 5,
        failure_window: Duration::from_secs(60),
        ..SignInSettings::default()
    };
    let accounts = accounts(storage, settings).await;
    for _ in 0..3 {
        let err = accounts
            .sign_in("olga", "wrong", addr(1))
            .await
            .expect_err("wrong");
        assert!(matches!(err, SignInError::BadCredentials));
    }
    // Held back now, even with the right password, from any address.
    let err = accounts
        .sign_in("olga", "password1", addr(2))
        .await
        .expect_err("held back");
    assert!(matches!(err, SignInError::Throttled { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("too many failed sign-ins: try again in")
    );
    // Another account is not affected ...
    accounts
        .sign_in("gus", "password1", addr(3))
        .await
        .expect("gus signs in");
    // ... until its address has failed too often.
    for _ in 0..2 {
        let _ = accounts.sign_in("gus", "wrong", addr(1)).await;
    }
    let err = accounts
        .sign_in("gus", "password1", addr(1))
        .await
        .expect_err("address held back");
    assert!(matches!(err, SignInError::Throttled { .. }), "{err}");
    accounts
        .sign_in("gus", "password1", addr(4))
        .await
        .expect("another address works");
}

async fn password_change_and_reset_revoke_sessions(storage: &Storage) {
    let accounts = accounts(storage, SignInSettings::default()).await;
    let session = accounts
        .sign_in("olga", "password1", None)
        .await
        .expect("sign in");
    assert!(matches!(
        accounts
            .change_password("olga", "not it", "new password")
            .await,
        Err(SignInError::BadCredentials)
    ));
    assert!(matches!(
        accounts.change_password("olga", "password1", "short").await,
        Err(SignInError::WeakPassword)
    ));
    accounts
        .change_password("olga", "password1", "new password")
        .await
        .expect("change");
    assert!(matches!(
        accounts.refresh(&session.refresh_token).await,
        Err(SignInError::InvalidToken)
    ));
    accounts
        .sign_in("olga", "new password", None)
        .await
        .expect("new password works");

    // gus administers globex: he cannot reset a user of acme, nor can olga (no user rights).
    let gus = accounts
        .sign_in("gus", "password1", None)
        .await
        .expect("gus");
    let gus = accounts
        .subject(&accounts.verify(&gus.access_token).expect("token"))
        .await
        .expect("subject");
    assert!(accounts.reset_password(&gus, "olga").await.is_err());
    accounts
        .sign_in("olga", "new password", None)
        .await
        .expect("unchanged");
    let olga = accounts
        .sign_in("olga", "new password", None)
        .await
        .expect("olga");
    let olga = accounts
        .subject(&accounts.verify(&olga.access_token).expect("token"))
        .await
        .expect("subject");
    assert!(matches!(
        accounts.reset_password(&olga, "gus").await,
        Err(SignInError::Denied(_))
    ));
    // gus resets himself (a user of his own tenant): the new password works, the old does not.
    let new = accounts.reset_password(&gus, "gus").await.expect("reset");
    accounts
        .sign_in("gus", &new, None)
        .await
        .expect("reset password works");
    assert!(accounts.sign_in("gus", "password1", None).await.is_err());
}

async fn a_tenants_own_role_decides_its_users_permissions(storage: &Storage) {
    let accounts = accounts(storage, SignInSettings::default()).await;
    let acme = Scope::tenant(tenants::by_name(storage, "acme").await.expect("acme").id);
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let installer = Grants::parse_tenant_role(&strings(&["devices=manage"]), &[]).expect("grants");
    roles::create(storage, acme, "installer", installer.stored())
        .await
        .expect("role");
    users::create(
        storage,
        acme,
        NewUser {
            login: "ian".into(),
            name: "Ian".into(),
            password_hash: hash_password("password1", FAST).expect("hash"),
            roles: vec!["installer".into()],
            ..Default::default()
        },
    )
    .await
    .expect("user with the tenant's role");
    let tokens = accounts
        .sign_in("ian", "password1", addr(9))
        .await
        .expect("sign in");
    let claims = accounts.verify(&tokens.access_token).expect("valid");
    let subject = accounts.subject(&claims).await.expect("subject");
    assert_eq!(
        authorize(&subject, ObjectKind::Devices, Operation::Update, None),
        Ok(Access::Tenant(acme))
    );
    assert!(authorize(&subject, ObjectKind::Devices, Operation::Delete, None).is_err());
    assert!(authorize(&subject, ObjectKind::Classes, Operation::View, None).is_err());

    // Changed grants apply to the very next request.
    let wider = Grants::parse_tenant_role(&strings(&["devices=full", "classes=view"]), &[])
        .expect("grants");
    roles::update(storage, acme, "installer", wider.stored())
        .await
        .expect("update");
    let subject = accounts.subject(&claims).await.expect("subject");
    assert!(authorize(&subject, ObjectKind::Devices, Operation::Delete, None).is_ok());
    assert!(authorize(&subject, ObjectKind::Classes, Operation::View, None).is_ok());

    // Another tenant's user cannot be given acme's role.
    let globex = Scope::tenant(
        tenants::by_name(storage, "globex")
            .await
            .expect("globex")
            .id,
    );
    let taken = users::create(
        storage,
        globex,
        NewUser {
            login: "gina".into(),
            name: "Gina".into(),
            password_hash: hash_password("password1", FAST).expect("hash"),
            roles: vec!["installer".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(taken.is_err(), "acme's role is unknown in globex");
}

/// The newest `limit` entries of a list.
fn newest(limit: u64) -> Page {
    Page {
        limit,
        ..Page::default()
    }
}
