//! A device class's model: its functions (groups of attributes), attribute definitions (type,
//! unit, kind) and command groups (named commands with their parameters) — read and replaced as
//! a whole, in one transaction.

use std::collections::HashSet;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};
use serde::{Deserialize, Serialize};

use super::{Scope, check_name, classes};
use crate::entity::{attribute_def, class_function, command_group};
use crate::{Storage, StorageError};

/// Types an attribute's values have.
pub const DATA_TYPES: [&str; 5] = ["number", "integer", "boolean", "string", "json"];
/// What an attribute is about.
pub const KINDS: [&str; 4] = ["configuration", "measurement", "operational", "event"];
/// Most functions, attributes or command groups one class has.
pub const MAX_ITEMS: usize = 1000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AttributeSpec {
    pub name: String,
    pub data_type: String,
    #[serde(default)]
    pub unit: Option<String>,
    pub kind: String,
    /// The function it belongs to (one of the class's).
    #[serde(default)]
    pub function: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    pub name: String,
    /// The parameters it takes and their defaults (free JSON object).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommandGroupSpec {
    pub name: String,
    pub commands: Vec<CommandSpec>,
}

/// The whole model of a class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClassModel {
    #[serde(default)]
    pub functions: Vec<String>,
    #[serde(default)]
    pub attributes: Vec<AttributeSpec>,
    #[serde(default)]
    pub command_groups: Vec<CommandGroupSpec>,
}

fn unique<'a>(
    field: &'static str,
    names: impl Iterator<Item = &'a str>,
) -> Result<HashSet<&'a str>, StorageError> {
    let mut seen = HashSet::new();
    for name in names {
        check_name(field, name)?;
        if !seen.insert(name) {
            return Err(StorageError::invalid(field, format!("name `{name}` twice")));
        }
        if seen.len() > MAX_ITEMS {
            return Err(StorageError::invalid(
                field,
                format!("are more than {MAX_ITEMS}: keep to {MAX_ITEMS} at most"),
            ));
        }
    }
    Ok(seen)
}

impl ClassModel {
    /// Checks names (unique, well-formed), types, kinds and functions named.
    pub fn check(&self) -> Result<(), StorageError> {
        let functions = unique("functions", self.functions.iter().map(String::as_str))?;
        unique(
            "attributes",
            self.attributes.iter().map(|a| a.name.as_str()),
        )?;
        for a in &self.attributes {
            if !DATA_TYPES.contains(&a.data_type.as_str()) {
                return Err(StorageError::invalid(
                    "attributes",
                    format!(
                        "give `{}` an unknown data_type: use one of {}",
                        a.name,
                        DATA_TYPES.join(", ")
                    ),
                ));
            }
            if !KINDS.contains(&a.kind.as_str()) {
                return Err(StorageError::invalid(
                    "attributes",
                    format!(
                        "give `{}` an unknown kind: use one of {}",
                        a.name,
                        KINDS.join(", ")
                    ),
                ));
            }
            if let Some(function) = &a.function
                && !functions.contains(function.as_str())
            {
                return Err(StorageError::invalid(
                    "attributes",
                    format!(
                        "give `{}` the function `{function}`, which the class does not have",
                        a.name
                    ),
                ));
            }
        }
        unique(
            "command_groups",
            self.command_groups.iter().map(|g| g.name.as_str()),
        )?;
        for group in &self.command_groups {
            unique(
                "command_groups",
                group.commands.iter().map(|c| c.name.as_str()),
            )?;
        }
        Ok(())
    }
}

/// The model of class `name`.
pub async fn get(storage: &Storage, scope: Scope, name: &str) -> Result<ClassModel, StorageError> {
    let class = classes::by_name(storage.db(), scope, name).await?;
    let functions = class_function::Entity::find()
        .filter(class_function::Column::ClassId.eq(class.id))
        .order_by_asc(class_function::Column::Id)
        .all(storage.db())
        .await?;
    let attributes = attribute_def::Entity::find()
        .filter(attribute_def::Column::ClassId.eq(class.id))
        .order_by_asc(attribute_def::Column::Id)
        .all(storage.db())
        .await?;
    let groups = command_group::Entity::find()
        .filter(command_group::Column::ClassId.eq(class.id))
        .order_by_asc(command_group::Column::Id)
        .all(storage.db())
        .await?;
    let function_name = |id: Option<i64>| {
        id.and_then(|id| {
            functions
                .iter()
                .find(|f| f.id == id)
                .map(|f| f.name.clone())
        })
    };
    Ok(ClassModel {
        attributes: attributes
            .into_iter()
            .map(|a| AttributeSpec {
                function: function_name(a.function_id),
                name: a.name,
                data_type: a.data_type,
                unit: a.unit,
                kind: a.kind,
            })
            .collect(),
        command_groups: groups
            .into_iter()
            .map(|g| CommandGroupSpec {
                name: g.name,
                // Stored by `set` from checked specs.
                commands: serde_json::from_value(g.commands).unwrap_or_default(),
            })
            .collect(),
        functions: functions.into_iter().map(|f| f.name).collect(),
    })
}

/// Replaces the model of class `name` (customers cannot).
pub async fn set(
    storage: &Storage,
    scope: Scope,
    name: &str,
    model: &ClassModel,
) -> Result<(), StorageError> {
    if scope.customer.is_some() {
        return Err(StorageError::Forbidden(
            "customers cannot change device classes",
        ));
    }
    model.check()?;
    let txn = storage.begin_write().await?;
    let class = classes::by_name(&txn, scope, name).await?;
    attribute_def::Entity::delete_many()
        .filter(attribute_def::Column::ClassId.eq(class.id))
        .exec(&txn)
        .await?;
    class_function::Entity::delete_many()
        .filter(class_function::Column::ClassId.eq(class.id))
        .exec(&txn)
        .await?;
    command_group::Entity::delete_many()
        .filter(command_group::Column::ClassId.eq(class.id))
        .exec(&txn)
        .await?;
    let mut function_ids = std::collections::HashMap::new();
    for function in &model.functions {
        let row = class_function::ActiveModel {
            class_id: Set(class.id),
            name: Set(function.clone()),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        function_ids.insert(function.as_str(), row.id);
    }
    for a in &model.attributes {
        attribute_def::ActiveModel {
            class_id: Set(class.id),
            function_id: Set(a
                .function
                .as_deref()
                .and_then(|f| function_ids.get(f).copied())),
            name: Set(a.name.clone()),
            data_type: Set(a.data_type.clone()),
            unit: Set(a.unit.clone()),
            kind: Set(a.kind.clone()),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
    }
    for group in &model.command_groups {
        command_group::ActiveModel {
            class_id: Set(class.id),
            name: Set(group.name.clone()),
            commands: Set(serde_json::to_value(&group.commands).unwrap_or_default()),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
    }
    txn.commit().await?;
    Ok(())
}
