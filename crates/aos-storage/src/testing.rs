//! Databases for tests: a temporary SQLite file, or a private schema in the PostgreSQL given by
//! `AOS_TEST_DATABASE_URL` (default: the local server). When PostgreSQL is unreachable, tests
//! skip with a loud message — except under `CI=true`, where that is a failure.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database};

use crate::{Storage, StorageConfig};

pub const TEST_DATABASE_URL_ENV: &str = "AOS_TEST_DATABASE_URL";
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn test_database_url() -> String {
    std::env::var(TEST_DATABASE_URL_ENV).unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string())
}

/// A SQLite database in a temporary directory, removed on drop.
pub struct SqliteTestDb {
    pub storage: Storage,
    pub dir: tempfile::TempDir,
}

pub async fn sqlite() -> SqliteTestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::connect(&StorageConfig::default(), dir.path())
        .await
        .expect("connect to a new SQLite database");
    SqliteTestDb { storage, dir }
}

/// A private schema in the test PostgreSQL; call [`PostgresTestDb::drop_schema`] at the end.
pub struct PostgresTestDb {
    pub storage: Storage,
    schema: String,
    url: String,
}

/// Connects to the test PostgreSQL in a new schema, or `None` (after a loud message) when it is
/// unreachable outside CI.
pub async fn postgres() -> Option<PostgresTestDb> {
    let url = test_database_url();
    let admin = match Database::connect(with_timeout(ConnectOptions::new(url.clone()))).await {
        Ok(db) => db,
        Err(err) => {
            aos_core::conformance::service_unavailable(
                "PostgreSQL",
                TEST_DATABASE_URL_ENV,
                &url,
                &err,
            );
            return None;
        }
    };
    let schema = aos_core::conformance::unique("aos_test").replace('-', "_");
    admin
        .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .expect("create test schema");
    admin.close().await.ok();
    let mut options = with_timeout(ConnectOptions::new(url.clone()));
    options.set_schema_search_path(schema.clone());
    let db = Database::connect(options)
        .await
        .expect("connect to test schema");
    Some(PostgresTestDb {
        storage: Storage::from_connection(db),
        schema,
        url,
    })
}

fn with_timeout(mut options: ConnectOptions) -> ConnectOptions {
    options
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .max_connections(4)
        .sqlx_logging(false);
    options
}

impl PostgresTestDb {
    pub async fn drop_schema(self) {
        let PostgresTestDb {
            storage,
            schema,
            url,
        } = self;
        storage.close().await.ok();
        if let Ok(admin) = Database::connect(with_timeout(ConnectOptions::new(url))).await {
            admin
                .execute_unprepared(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await
                .ok();
            admin.close().await.ok();
        }
    }
}

/// Defines each named `async fn(&Storage)` case as two tests: one on a new SQLite database, one
/// on a new PostgreSQL schema (skipped loudly when PostgreSQL is unreachable outside CI). Both
/// are migrated first. Use at the top level of a test crate.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = $crate::testing::sqlite().await;
                    db.storage.migrate().await.expect("migrate");
                    super::$name(&db.storage).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = $crate::testing::postgres().await else { return };
                    db.storage.migrate().await.expect("migrate");
                    super::$name(&db.storage).await;
                    db.drop_schema().await;
                }
            )*
        }
    };
}

/// Tenant `acme` with a class `sensor` and its device `d-1`: where most storage tests start.
pub async fn acme_with_one_device(
    storage: &Storage,
) -> (crate::repo::Scope, crate::entity::device::Model) {
    use crate::repo::{Scope, tenants};
    let scope = Scope::tenant(tenants::create(storage, "acme").await.expect("tenant").id);
    add_class(storage, scope, "sensor", false).await;
    let device = add_device(storage, scope, "d-1", "sensor", None).await;
    (scope, device)
}

/// Device class `name` in the scope's tenant (a gateway class if `is_gateway`).
pub async fn add_class(storage: &Storage, scope: crate::repo::Scope, name: &str, is_gateway: bool) {
    use crate::repo::classes::{self, NewClass};
    classes::create(
        storage,
        scope,
        NewClass {
            name: name.into(),
            is_gateway,
            ..Default::default()
        },
    )
    .await
    .expect("class");
}

/// Device `uid` of class `class` in the scope's tenant, a child node of `gateway` if given.
pub async fn add_device(
    storage: &Storage,
    scope: crate::repo::Scope,
    uid: &str,
    class: &str,
    gateway: Option<&str>,
) -> crate::entity::device::Model {
    use crate::repo::devices::{self, NewDevice};
    devices::create(
        storage,
        scope,
        NewDevice {
            uid: uid.into(),
            name: uid.into(),
            class: class.into(),
            gateway: gateway.map(String::from),
            ..Default::default()
        },
    )
    .await
    .expect("device")
}
