//! OpenAPI schemas for rules the API checks that a derived schema cannot state — identifiers and
//! names as `aos_storage::repo::check_identifier` and `check_name` take them, durations, role
//! grants, interpreter levels, API key grants — so that the document says what is accepted. A
//! field refers to one with `#[schema(value_type = Identifier)]`.

use aos_auth::permissions::{AdvancedAction, Level, ObjectKind};
use aos_storage::repo::MAX_NAME;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema,
    SchemaType, Type,
};
use utoipa::{PartialSchema, ToSchema};

fn string(description: &str, pattern: &str, min: usize, max: usize) -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
            .min_length(Some(min))
            .max_length(Some(max))
            .pattern(Some(pattern))
            .build(),
    ))
}

/// An identifier used on the wire: a device id, a login, a tenant or API key name.
pub enum Identifier {}

impl PartialSchema for Identifier {
    fn schema() -> RefOr<Schema> {
        string(
            "Letters, digits, `-`, `_`, `.` and `@`: nothing that means something in an MQTT topic.",
            "^[A-Za-z0-9._@-]+$",
            1,
            MAX_NAME,
        )
    }
}

impl ToSchema for Identifier {}

/// A display name: not blank, no control characters.
pub enum Name {}

impl PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        string(
            "Any text but control characters, not only spaces.",
            "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
            1,
            MAX_NAME,
        )
    }
}

impl ToSchema for Name {}

/// A duration longer than zero, as `30s`, `1h`, `90d` or `2days`.
pub enum DurationText {}

impl PartialSchema for DurationText {
    fn schema() -> RefOr<Schema> {
        string(
            "A duration longer than zero: a number and a unit (`ms`, `s`, `m`, `h`, `d`, `w`, \
             `days`...), as `30s`, `1h` or `90d`.",
            // At most 99,999 days, 9,999 weeks or 99 years: an expiry before the year 10000.
            "^(?:[1-9][0-9]{0,4}(?:ms|s|m|min|h|hours?|d|days?)|[1-9][0-9]{0,3}(?:w|weeks?)|[1-9][0-9]?(?:y|years?))$",
            2,
            12,
        )
    }
}

impl ToSchema for DurationText {}

/// The name a value of `aos-auth`'s enums has in JSON.
fn json_name(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn string_enum(values: Vec<String>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
}

/// What a tenant's role grants: object kind → level (platform kinds are not grantable there).
pub enum RolePermissions {}

impl PartialSchema for RolePermissions {
    fn schema() -> RefOr<Schema> {
        let levels: Vec<String> = [Level::None, Level::View, Level::Manage, Level::Full]
            .into_iter()
            .map(json_name)
            .collect();
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("Object kind → level."))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for kind in ObjectKind::ALL.into_iter().filter(|k| !k.is_platform()) {
            object = object.property(kind.name(), string_enum(levels.clone()));
        }
        RefOr::T(Schema::Object(object.build()))
    }
}

impl ToSchema for RolePermissions {}

/// The advanced actions a role grants one by one.
pub enum RoleActions {}

impl PartialSchema for RoleActions {
    fn schema() -> RefOr<Schema> {
        let actions = [
            AdvancedAction::Validate,
            AdvancedAction::Lock,
            AdvancedAction::Disable,
        ]
        .into_iter()
        .map(json_name)
        .collect();
        RefOr::T(Schema::Array(
            ArrayBuilder::new().items(string_enum(actions)).build(),
        ))
    }
}

impl ToSchema for RoleActions {}

/// An e-mail address: a name with an `@`.
pub enum Email {}

impl PartialSchema for Email {
    fn schema() -> RefOr<Schema> {
        string(
            "An e-mail address: a name without `@`, an `@`, a domain.",
            "^[^@\\s\\u0000-\\u001f\\u007f-\\u009f]+@[^\\s\\u0000-\\u001f\\u007f-\\u009f]+$",
            3,
            MAX_NAME,
        )
    }
}

impl ToSchema for Email {}

/// A range's bound: a number, or `null` (open).
fn bound() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::Number, Type::Null]))
}

/// An interpreter's levels: named numeric ranges, `min` ≤ value < `max` (either bound open).
pub enum LevelRanges {}

impl PartialSchema for LevelRanges {
    fn schema() -> RefOr<Schema> {
        let levels = aos_formats::interpret::LEVELS.map(String::from).to_vec();
        let range = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("level", string_enum(levels))
            .property("min", bound())
            .property("max", bound())
            .required("level")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        RefOr::T(Schema::Array(ArrayBuilder::new().items(range).build()))
    }
}

impl ToSchema for LevelRanges {}

/// An API key's grants: MQTT topic filters it may publish and/or subscribe to, each allowing at
/// least one of the two.
pub enum Grants {}

impl PartialSchema for Grants {
    fn schema() -> RefOr<Schema> {
        let filter = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "An MQTT topic filter: `+` and `#` take a whole level, `#` only the last.",
            ))
            .min_length(Some(1))
            // Characters that take at most four bytes each: within MQTT's 65,535.
            .max_length(Some(aos_core::topic::MAX_TOPIC_LEN / 4))
            .pattern(Some(
                "^(?:(?:[^/+#\\u0000]*|\\+)/)*(?:[^/+#\\u0000]*|\\+|#)$",
            ));
        let grant = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("filter", filter)
            .required("filter")
            .property("publish", ObjectBuilder::new().schema_type(Type::Boolean))
            .property("subscribe", ObjectBuilder::new().schema_type(Type::Boolean))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let allowed = |flag: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    flag,
                    ObjectBuilder::new()
                        .schema_type(Type::Boolean)
                        .enum_values(Some([true])),
                )
                .required(flag)
        };
        let one_grant = AllOfBuilder::new().item(grant).item(
            AnyOfBuilder::new()
                .item(allowed("publish"))
                .item(allowed("subscribe")),
        );
        RefOr::T(Schema::Array(
            ArrayBuilder::new()
                .items(one_grant)
                .max_items(Some(aos_storage::repo::api_keys::MAX_GRANTS))
                .build(),
        ))
    }
}

impl ToSchema for Grants {}
