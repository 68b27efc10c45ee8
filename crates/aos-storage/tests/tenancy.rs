//! Tenant scoping, customers, duplicates, unknown references and invalid input, on SQLite and
//! PostgreSQL alike: a query made for one tenant (or customer) never reads or changes another's.

use aos_core::access::{Revoked, TopicGrant};
use aos_storage::entity::{device, org_entity};
use aos_storage::repo::api_keys::{self, NewApiKey};
use aos_storage::repo::classes::{self, NewClass};
use aos_storage::repo::devices::{self, NewCredential, NewDevice};
use aos_storage::repo::roles::{self, RoleGrants};
use aos_storage::repo::users::{self, NewUser};
use aos_storage::repo::{Scope, tenants};
use aos_storage::{Storage, StorageError};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};

aos_storage::on_both_databases!(
    tenants_see_only_their_own_devices,
    customers_see_only_their_entity,
    duplicates_and_unknown_references_are_clear_errors,
    invalid_input_is_refused_and_writes_nothing,
    credentials_are_replaced_and_scoped,
    roles_and_api_keys_belong_to_their_tenant,
);

/// Two tenants, each with a class `sensor` and a device.
async fn two_tenants(storage: &Storage) -> (Scope, Scope) {
    let a = Scope::tenant(tenants::create(storage, "acme").await.expect("acme").id);
    let b = Scope::tenant(tenants::create(storage, "globex").await.expect("globex").id);
    for (scope, uid) in [(a, "acme-1"), (b, "globex-1")] {
        classes::create(
            storage,
            scope,
            NewClass {
                name: "sensor".into(),
                ..Default::default()
            },
        )
        .await
        .expect("class");
        devices::create(
            storage,
            scope,
            NewDevice {
                uid: uid.into(),
                name: uid.into(),
                class: "sensor".into(),
                ..Default::default()
            },
        )
        .await
        .expect("device");
    }
    (a, b)
}

async fn customer(storage: &Storage, scope: Scope, name: &str) -> i64 {
    org_entity::ActiveModel {
        tenant_id: Set(scope.tenant),
        name: Set(name.into()),
        kind: Set("customer".into()),
        parent_id: Set(None),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(storage.db())
    .await
    .expect("entity")
    .id
}

fn uids(devices: &[device::Model]) -> Vec<&str> {
    devices.iter().map(|d| d.uid.as_str()).collect()
}

fn is_not_found(result: Result<impl std::fmt::Debug, StorageError>) -> bool {
    matches!(result, Err(StorageError::NotFound { .. }))
}

async fn tenants_see_only_their_own_devices(storage: &Storage) {
    let (a, b) = two_tenants(storage).await;
    assert_eq!(
        uids(&devices::list(storage, a).await.expect("list")),
        ["acme-1"]
    );
    assert_eq!(
        uids(&devices::list(storage, b).await.expect("list")),
        ["globex-1"]
    );
    // Reading, crediting or attaching another tenant's device fails as if it did not exist.
    assert!(is_not_found(devices::get(storage, a, "globex-1").await));
    let credential = NewCredential::Token {
        lookup: "00".repeat(32),
    };
    assert!(is_not_found(
        devices::set_credential(storage, a, "globex-1", credential).await
    ));
    let child = NewDevice {
        uid: "acme-child".into(),
        name: "child".into(),
        class: "sensor".into(),
        gateway: Some("globex-1".into()),
        ..Default::default()
    };
    assert!(is_not_found(devices::create(storage, a, child).await));
    // Nor can a tenant use another tenant's class.
    classes::create(
        storage,
        b,
        NewClass {
            name: "globex-only".into(),
            ..Default::default()
        },
    )
    .await
    .expect("class");
    let foreign_class = NewDevice {
        uid: "acme-2".into(),
        name: "two".into(),
        class: "globex-only".into(),
        ..Default::default()
    };
    assert!(is_not_found(
        devices::create(storage, a, foreign_class).await
    ));
    assert_eq!(classes::list(storage, a).await.expect("classes").len(), 1);
    // Users: a tenant cannot change another tenant's user's password.
    users::create(
        storage,
        b,
        NewUser {
            login: "bob".into(),
            name: "Bob".into(),
            password_hash: "old".into(),
            ..Default::default()
        },
    )
    .await
    .expect("user");
    assert!(is_not_found(
        users::set_password(storage, Some(a), "bob", "new".into()).await
    ));
    assert_eq!(
        users::by_login(storage, "bob")
            .await
            .expect("bob")
            .password_hash,
        "old"
    );
    assert!(users::list(storage, a).await.expect("users").is_empty());
}

async fn customers_see_only_their_entity(storage: &Storage) {
    let (a, _) = two_tenants(storage).await;
    let north = customer(storage, a, "north").await;
    customer(storage, a, "south").await;
    let as_north = Scope::customer(a.tenant, north);
    // A customer's new device is bound to it; an operator's device of `south` is not visible.
    devices::create(
        storage,
        as_north,
        NewDevice {
            uid: "north-1".into(),
            name: "n1".into(),
            class: "sensor".into(),
            ..Default::default()
        },
    )
    .await
    .expect("customer's device");
    devices::create(
        storage,
        a,
        NewDevice {
            uid: "south-1".into(),
            name: "s1".into(),
            class: "sensor".into(),
            entity: Some("south".into()),
            ..Default::default()
        },
    )
    .await
    .expect("operator's device for south");
    assert_eq!(
        uids(&devices::list(storage, as_north).await.expect("list")),
        ["north-1"]
    );
    assert!(is_not_found(
        devices::get(storage, as_north, "south-1").await
    ));
    assert!(is_not_found(
        devices::get(storage, as_north, "acme-1").await
    ));
    // A customer cannot create devices for another customer, nor classes.
    let for_south = NewDevice {
        uid: "north-2".into(),
        name: "n2".into(),
        class: "sensor".into(),
        entity: Some("south".into()),
        ..Default::default()
    };
    assert!(matches!(
        devices::create(storage, as_north, for_south).await,
        Err(StorageError::Forbidden(_))
    ));
    assert!(matches!(
        classes::create(
            storage,
            as_north,
            NewClass {
                name: "x".into(),
                ..Default::default()
            }
        )
        .await,
        Err(StorageError::Forbidden(_))
    ));
    // The tenant sees every device.
    assert_eq!(devices::list(storage, a).await.expect("list").len(), 3);
}

async fn duplicates_and_unknown_references_are_clear_errors(storage: &Storage) {
    let (a, b) = two_tenants(storage).await;
    let err = tenants::create(storage, "acme")
        .await
        .expect_err("duplicate tenant");
    assert_eq!(
        err.to_string(),
        "tenant `acme` already exists: choose another name"
    );
    let again = NewClass {
        name: "sensor".into(),
        ..Default::default()
    };
    assert!(matches!(
        classes::create(storage, a, again).await,
        Err(StorageError::Duplicate {
            what: "device class",
            ..
        })
    ));
    // Device ids are unique on the platform (they are MQTT client ids).
    let clash = NewDevice {
        uid: "acme-1".into(),
        name: "clash".into(),
        class: "sensor".into(),
        ..Default::default()
    };
    assert!(matches!(
        devices::create(storage, b, clash).await,
        Err(StorageError::Duplicate { what: "device", .. })
    ));
    let unknown = NewDevice {
        uid: "acme-3".into(),
        name: "three".into(),
        class: "no-such-class".into(),
        ..Default::default()
    };
    let err = devices::create(storage, a, unknown)
        .await
        .expect_err("unknown class");
    assert_eq!(
        err.to_string(),
        "no device class `no-such-class` here: check the name (and the tenant)"
    );
    assert!(is_not_found(tenants::by_name(storage, "initech").await));
}

async fn invalid_input_is_refused_and_writes_nothing(storage: &Storage) {
    let (a, _) = two_tenants(storage).await;
    for (uid, name) in [
        ("has/slash", "ok"),
        ("has+plus", "ok"),
        ("", "ok"),
        (&"x".repeat(129), "ok"),
        ("fine", ""),
        ("fine", "bell\u{7}"),
        ("fine", &"n".repeat(129)),
    ] {
        let new = NewDevice {
            uid: uid.into(),
            name: name.into(),
            class: "sensor".into(),
            ..Default::default()
        };
        assert!(
            matches!(
                devices::create(storage, a, new).await,
                Err(StorageError::Invalid { .. })
            ),
            "uid {uid:?} name {name:?} must be refused"
        );
    }
    assert!(matches!(
        tenants::create(storage, " ").await,
        Err(StorageError::Invalid { .. })
    ));
    // A device whose gateway is unknown fails inside its transaction: nothing is left behind.
    let orphan = NewDevice {
        uid: "orphan".into(),
        name: "orphan".into(),
        class: "sensor".into(),
        gateway: Some("no-such-gateway".into()),
        ..Default::default()
    };
    assert!(is_not_found(devices::create(storage, a, orphan).await));
    assert_eq!(
        uids(&devices::list(storage, a).await.expect("list")),
        ["acme-1"]
    );
    assert_eq!(
        device::Entity::find()
            .all(storage.db())
            .await
            .expect("all")
            .len(),
        2
    );
}

async fn credentials_are_replaced_and_scoped(storage: &Storage) {
    let (a, b) = two_tenants(storage).await;
    let password = |user: &str, hash: &str| NewCredential::Password {
        username: user.into(),
        hash: hash.into(),
    };
    devices::set_credential(storage, a, "acme-1", password("acme-1", "h1"))
        .await
        .expect("first password");
    devices::set_credential(storage, a, "acme-1", password("acme-1", "h2"))
        .await
        .expect("a new password replaces the old");
    let creds = devices::credentials(storage, a, "acme-1")
        .await
        .expect("creds");
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0].secret_hash.as_deref(), Some("h2"));
    // MQTT usernames are unique on the platform.
    assert!(matches!(
        devices::set_credential(storage, b, "globex-1", password("acme-1", "h3")).await,
        Err(StorageError::Duplicate { .. })
    ));
    assert!(is_not_found(
        devices::credentials(storage, b, "acme-1").await
    ));
    assert!(matches!(
        devices::set_credential(storage, a, "acme-1", password("bad user", "h")).await,
        Err(StorageError::Invalid { .. })
    ));
    // The failed change left the working credential in place.
    assert_eq!(
        devices::credentials(storage, a, "acme-1")
            .await
            .expect("creds")
            .len(),
        1
    );
}

fn grants(devices: &str) -> RoleGrants {
    RoleGrants {
        permissions: serde_json::json!({ "devices": devices }),
        actions: serde_json::json!([]),
    }
}

fn key(name: &str, hash: &str, filter: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        prefix: hash[..4].into(),
        key_hash: hash.into(),
        grants: vec![TopicGrant {
            filter: filter.into(),
            publish: false,
            subscribe: true,
        }],
        expires_at: None,
    }
}

async fn roles_and_api_keys_belong_to_their_tenant(storage: &Storage) {
    let (a, b) = two_tenants(storage).await;
    let builtin = [
        ("operator", grants("manage")),
        ("system administrator", grants("full")),
    ];
    roles::ensure_builtin(storage, &builtin)
        .await
        .expect("built-in roles");
    roles::create(storage, a, "installer", grants("manage"))
        .await
        .expect("a role of acme");
    roles::create(storage, b, "installer", grants("view"))
        .await
        .expect("names are per tenant");
    for name in ["installer", "operator"] {
        assert!(
            matches!(
                roles::create(storage, a, name, grants("full")).await,
                Err(StorageError::Duplicate { .. })
            ),
            "{name}"
        );
    }
    // Changing globex's role leaves acme's alone; built-in roles cannot be changed.
    roles::update(storage, b, "installer", grants("full"))
        .await
        .expect("update");
    assert!(matches!(
        roles::update(storage, a, "operator", grants("full")).await,
        Err(StorageError::Forbidden(_))
    ));
    assert!(is_not_found(
        roles::update(storage, a, "nobody", grants("full")).await
    ));
    let listed = roles::list(storage, a).await.expect("list");
    let installer: Vec<_> = listed.iter().filter(|r| r.name == "installer").collect();
    assert_eq!(installer.len(), 1);
    assert_eq!(installer[0].permissions["devices"], "manage");
    assert!(listed.iter().all(|r| r.name != "system administrator"));
    assert!(listed.iter().any(|r| r.name == "operator" && r.builtin));
    let customer = Scope::customer(a.tenant, customer(storage, a, "c1").await);
    assert!(matches!(
        roles::create(storage, customer, "mine", grants("view")).await,
        Err(StorageError::Forbidden(_))
    ));

    // API keys: names per tenant, valid filters only, revocation scoped and logged.
    let acme_key = api_keys::create(storage, a, key("app", "hash-acme", "aos/+/telemetry"))
        .await
        .expect("key");
    api_keys::create(storage, b, key("app", "hash-globex", "#"))
        .await
        .expect("names are per tenant");
    assert!(matches!(
        api_keys::create(storage, a, key("app", "hash-other", "#")).await,
        Err(StorageError::Duplicate { .. })
    ));
    assert!(matches!(
        api_keys::create(storage, a, key("bad", "hash-bad", "a/#/b")).await,
        Err(StorageError::Invalid { .. })
    ));
    assert!(matches!(
        api_keys::create(storage, customer, key("c", "hash-c", "#")).await,
        Err(StorageError::Forbidden(_))
    ));
    let before = devices::last_credential_change(storage).await.expect("log");
    let revoked = api_keys::revoke(storage, b, "app").await.expect("revoke");
    assert!(
        api_keys::by_hash(storage, "hash-globex")
            .await
            .expect("lookup")
            .is_none()
    );
    let live = api_keys::by_hash(storage, "hash-acme")
        .await
        .expect("lookup");
    assert_eq!(live.map(|k| k.id), Some(acme_key.id));
    let changes = devices::credential_changes_since(storage, before)
        .await
        .expect("log");
    assert_eq!(
        changes
            .into_iter()
            .map(|(_, r)| r.revoked)
            .collect::<Vec<_>>(),
        vec![Revoked::ApiKey(revoked.id)]
    );
    assert!(is_not_found(api_keys::revoke(storage, b, "nope").await));
}
