//! `aos-storage`: the platform's relational storage.
//!
//! SQLite (a file in the node's data directory, WAL mode) is the embedded default; a
//! `postgres://` URL selects PostgreSQL. The same sea-orm entities and migrations serve both.

pub mod entity;
pub mod migration;
pub mod nodes;
pub mod repo;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseBackend, DatabaseConnection, DatabaseTransaction,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use serde::{Deserialize, Serialize};

pub use migration::Migrator;

/// The `[storage]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`. Empty: SQLite at
    /// `<node.data_dir>/aos.db`, created on first start.
    pub url: String,
    /// Apply pending migrations when the node starts (otherwise run `aos migrate`).
    pub migrate_on_start: bool,
    /// Connections in the pool (default: 8 on SQLite, 16 on PostgreSQL, where the worker's
    /// consumers write side by side).
    pub max_connections: Option<u32>,
    /// How long to wait for a connection (and, on SQLite, for a lock) before failing.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: String::new(),
            migrate_on_start: true,
            max_connections: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl StorageConfig {
    /// The URL to connect to, with the empty default resolved against the data directory.
    pub fn resolved_url(&self, data_dir: &Path) -> String {
        if self.url.is_empty() {
            format!("sqlite://{}", data_dir.join("aos.db").display())
        } else {
            self.url.clone()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "unsupported storage URL `{0}`: use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE (key `storage.url`, environment variable AOS_STORAGE__URL)"
    )]
    UnsupportedUrl(String),
    #[error("cannot create the directory {path} for the SQLite database: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to the database at {url}: {source}")]
    Connect { url: String, source: sea_orm::DbErr },
    #[error("database migration failed: {0}")]
    Migration(sea_orm::DbErr),
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("{what} `{name}` already exists: choose another name")]
    Duplicate { what: &'static str, name: String },
    #[error("no {what} `{key}` here: check the name (and the tenant)")]
    NotFound { what: &'static str, key: String },
    /// `reason` completes a sentence whose subject is `field`: "device id must be …".
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// `reason` says what holds on to it and what to do first.
    #[error("{what} `{name}` is in use: {reason}")]
    InUse {
        what: &'static str,
        name: String,
        reason: String,
    },
}

impl StorageError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> StorageError {
        StorageError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub fn not_found(what: &'static str, key: impl Into<String>) -> StorageError {
        StorageError::NotFound {
            what,
            key: key.into(),
        }
    }
}

/// A connection pool to the platform database.
#[derive(Clone, Debug)]
pub struct Storage {
    db: DatabaseConnection,
}

impl Storage {
    /// Connects (creating the SQLite file and its directory when needed).
    pub async fn connect(config: &StorageConfig, data_dir: &Path) -> Result<Storage, StorageError> {
        let url = config.resolved_url(data_dir);
        let shown = aos_core::config::redact_url(&url);
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let mut options = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            let busy_timeout = config.connect_timeout;
            let mut options = ConnectOptions::new(url.clone());
            options.map_sqlx_sqlite_opts(move |opts| {
                opts.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // WAL + NORMAL is durable across process crashes; only an OS crash can lose
                    // the last transactions.
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(busy_timeout)
                    .foreign_keys(true)
                    // The ledger's indexes outgrow SQLite's default 2 MiB page cache at once: a
                    // 64 MiB cache per connection keeps their hot pages out of read calls.
                    .pragma("cache_size", "-65536")
                    .pragma("temp_store", "memory")
                    // Checkpoint every ~40 MiB of WAL instead of 4 MiB: an index page changed by
                    // many transactions is written back once per checkpoint.
                    .pragma("wal_autocheckpoint", "10000")
            });
            options
        } else if postgres {
            ConnectOptions::new(url.clone())
        } else {
            return Err(StorageError::UnsupportedUrl(shown));
        };
        options
            .max_connections(
                config
                    .max_connections
                    .unwrap_or(if postgres { 16 } else { 8 })
                    .max(1),
            )
            .connect_timeout(config.connect_timeout)
            .acquire_timeout(config.connect_timeout)
            .sqlx_logging(false);
        let db = Database::connect(options)
            .await
            .map_err(|source| StorageError::Connect { url: shown, source })?;
        Ok(Storage { db })
    }

    /// Wraps an existing connection (embedding, tests).
    pub fn from_connection(db: DatabaseConnection) -> Storage {
        Storage { db }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Begins a transaction that writes. On SQLite it takes the write lock at `BEGIN`
    /// (`BEGIN IMMEDIATE`), so concurrent writers queue on the busy timeout instead of failing:
    /// a deferred transaction that read first could not become a writer once another had
    /// committed (`database is locked`, extended code 517). PostgreSQL needs nothing of the sort.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, sea_orm::DbErr> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }

    /// How many transactions writing at once store the most: on SQLite two (one writes, the
    /// other prepares its batch meanwhile; a third only waits for the lock); PostgreSQL writes
    /// side by side, and each writer's round trips and commit flush hide behind the others'
    /// work (measured in docs/performance.md).
    pub fn parallel_writers(&self) -> usize {
        match self.backend() {
            DatabaseBackend::Postgres => 8,
            _ => 2,
        }
    }

    /// Applies every pending migration; returns the names of those applied now.
    pub async fn migrate(&self) -> Result<Vec<String>, StorageError> {
        let pending: Vec<String> = Migrator::get_pending_migrations(&self.db)
            .await
            .map_err(StorageError::Migration)?
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        Migrator::up(&self.db, None)
            .await
            .map_err(StorageError::Migration)?;
        Ok(pending)
    }

    /// Migrations not applied yet.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StorageError> {
        Ok(Migrator::get_pending_migrations(&self.db)
            .await
            .map_err(StorageError::Migration)?
            .iter()
            .map(|m| m.name().to_string())
            .collect())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        Ok(self.db.ping().await?)
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(self) -> Result<(), StorageError> {
        Ok(self.db.close().await?)
    }
}
