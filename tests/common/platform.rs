//! Helpers for tests of the platform behind the broker: a device's access token from the CLI,
//! the node's database, and waiting until the workers have logged messages.

use std::path::Path;
use std::time::{Duration, Instant};

use aos_storage::entity::{ledger, message_log};
use aos_storage::{Storage, StorageConfig};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use super::{PATIENCE, cli_ok};

/// The value printed after `prefix` on a line of `out` (keys and tokens shown once).
pub fn printed(out: &str, prefix: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("`{prefix}` printed in {out}"))
        .to_string()
}

/// A new access token for device `uid` of `tenant`, made with the CLI.
pub fn access_token(dir: &Path, uid: &str, tenant: &str) -> String {
    let out = cli_ok(dir, &["device", "credentials", uid, "--tenant", tenant]);
    printed(&out, "access token: ")
}

/// The database of the node whose data directory is `dir/data`.
pub async fn storage(dir: &Path) -> Storage {
    Storage::connect(&StorageConfig::default(), &dir.join("data"))
        .await
        .expect("database")
}

/// Waits (polling, with a deadline) until the message log holds at least `count` entries.
pub async fn wait_logged(storage: &Storage, count: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let logged = message_log::Entity::find()
            .count(storage.db())
            .await
            .expect("count");
        if logged >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{logged} of {count} messages logged in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The numeric values stored in the ledger for `attribute`, one per row (duplicates included).
pub async fn ledger_numbers(storage: &Storage, attribute: &str) -> Vec<i64> {
    ledger::Entity::find()
        .filter(ledger::Column::Attribute.eq(attribute))
        .all(storage.db())
        .await
        .expect("ledger")
        .iter()
        .filter_map(|r| r.value_num)
        .map(|v| v as i64)
        .collect()
}
