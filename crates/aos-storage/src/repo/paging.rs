//! One way to page and sort every list: `limit`/`offset` and `sort` naming a field (`-field`
//! for descending) among those a list allows, and the total that matches.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, Order, PaginatorTrait, QueryOrder,
    QuerySelect, Select,
};

use crate::StorageError;

/// Which page of a list, in which order.
#[derive(Clone, Debug)]
pub struct Page {
    pub limit: u64,
    pub offset: u64,
    /// A field name the list sorts by, `-name` for descending; None: the list's own order.
    pub sort: Option<String>,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: 50,
            offset: 0,
            sort: None,
        }
    }
}

/// A sort key: which field, which way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortKey<'a> {
    pub field: &'a str,
    pub descending: bool,
}

impl Page {
    /// The sort asked for, checked against the fields the list allows.
    pub fn sort_key(&self, allowed: &[&str]) -> Result<Option<SortKey<'_>>, StorageError> {
        let Some(sort) = self.sort.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let (field, descending) = match sort.strip_prefix('-') {
            Some(field) => (field, true),
            None => (sort, false),
        };
        if allowed.contains(&field) {
            Ok(Some(SortKey { field, descending }))
        } else {
            Err(StorageError::invalid(
                "sort",
                format!(
                    "must be one of {} (`-name` for descending), not `{field}`",
                    allowed.join(", ")
                ),
            ))
        }
    }
}

/// Orders `select` by the page's sort (one of `columns`) or else by `default`, then by the
/// primary key column given last so that pages never overlap.
pub(crate) fn ordered<S: QueryOrder, C: ColumnTrait>(
    select: S,
    page: &Page,
    columns: &[(&str, C)],
    default: (C, Order),
    tie: C,
) -> Result<S, StorageError> {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let (column, order) = match page.sort_key(&names)? {
        Some(key) => {
            let column = columns
                .iter()
                .find(|(name, _)| *name == key.field)
                .map(|(_, column)| *column)
                .unwrap_or(default.0);
            let order = if key.descending {
                Order::Desc
            } else {
                Order::Asc
            };
            (column, order)
        }
        None => default,
    };
    let tie_order = order.clone();
    Ok(select.order_by(column, order).order_by(tie, tie_order))
}

/// One page of `select` and how many rows match in all.
pub(crate) async fn fetch<E, M>(
    db: &impl ConnectionTrait,
    select: Select<E>,
    page: &Page,
) -> Result<(Vec<M>, u64), StorageError>
where
    E: EntityTrait<Model = M>,
    M: FromQueryResult + Sized + Send + Sync,
{
    let total = select.clone().count(db).await?;
    let items = select.limit(page.limit).offset(page.offset).all(db).await?;
    Ok((items, total))
}

/// Pages and sorts a short list held in memory (configuration-sized lists: classes, roles...),
/// the same way as the database lists. `key` gives an item's value of a sort field.
pub fn in_memory<T, K: Ord>(
    mut items: Vec<T>,
    page: &Page,
    allowed: &[&str],
    key: impl Fn(&T, &str) -> K,
) -> Result<(Vec<T>, u64), StorageError> {
    if let Some(sort) = page.sort_key(allowed)? {
        items.sort_by(|a, b| {
            let ordering = key(a, sort.field).cmp(&key(b, sort.field));
            if sort.descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
    }
    let total = items.len() as u64;
    let items = items
        .into_iter()
        .skip(usize::try_from(page.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(page.limit).unwrap_or(usize::MAX))
        .collect();
    Ok((items, total))
}
