//! Interpreters: per attribute — of one device class, or of every class of a tenant — a value
//! mapping (raw value → value), an expression (rhai, the value as `value`), and levels (normal,
//! warning, faulty, … by numeric range) whose change raises or clears an event. A class's own
//! interpreter of an attribute wins over the tenant-wide one.

use std::collections::HashMap;

pub use rhai::Engine;
use rhai::{AST, Dynamic, Scope};
use serde::Deserialize;
use serde_json::Value;

/// The level of values no range names.
pub const NORMAL: &str = "normal";

/// The levels a range may name (events and workflows refer to them by name).
pub const LEVELS: [&str; 3] = [NORMAL, "warning", "faulty"];

/// Operations one expression may take (a runaway script fails instead of stalling the pipeline).
const MAX_OPERATIONS: u64 = 10_000;

/// A named numeric range: `min` ≤ value < `max` (either bound may be open).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelRange {
    pub level: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// One attribute's interpretation, compiled.
#[derive(Debug)]
pub struct Interpreter {
    value_map: Option<serde_json::Map<String, Value>>,
    expression: Option<AST>,
    levels: Vec<LevelRange>,
}

/// A value after interpretation.
#[derive(Clone, Debug, PartialEq)]
pub struct Interpreted {
    pub value: Value,
    /// The value as it arrived, when interpretation changed it.
    pub raw: Option<Value>,
    /// `None` when the interpreter has no levels (or the value is not a number).
    pub level: Option<String>,
}

/// The engine expressions run on: no file or module access, bounded work.
pub fn engine() -> Engine {
    let mut engine = Engine::new();
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_expr_depths(32, 32);
    engine.set_max_string_size(4096);
    engine
}

fn key_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn to_dynamic(value: &Value) -> Result<Dynamic, String> {
    match value {
        Value::Number(n) => Ok(match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or_default()),
        }),
        Value::String(s) => Ok(Dynamic::from(s.clone())),
        Value::Bool(b) => Ok(Dynamic::from_bool(*b)),
        other => Err(format!(
            "expressions take numbers, strings and booleans, not {other}"
        )),
    }
}

fn from_dynamic(result: Dynamic) -> Result<Value, String> {
    if let Ok(i) = result.as_int() {
        return Ok(i.into());
    }
    if let Ok(f) = result.as_float() {
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("the expression gave {f}, not a number"));
    }
    if let Ok(b) = result.as_bool() {
        return Ok(b.into());
    }
    if result.is_string() {
        return Ok(result.into_string().unwrap_or_default().into());
    }
    Err(format!(
        "the expression gave a {}, not a number, string or boolean",
        result.type_name()
    ))
}

impl Interpreter {
    /// Compiles a stored interpreter; the error says which part is wrong.
    pub fn compile(
        engine: &Engine,
        value_map: Option<&Value>,
        expression: Option<&str>,
        levels: Option<&Value>,
    ) -> Result<Interpreter, String> {
        let value_map = match value_map {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map.clone()),
            Some(other) => return Err(format!("the value map must be an object, not {other}")),
        };
        let expression = match expression {
            Some(text) => Some(
                engine
                    .compile_expression(text)
                    .map_err(|e| format!("the expression `{text}` does not compile: {e}"))?,
            ),
            None => None,
        };
        let levels: Vec<LevelRange> = match levels {
            None | Some(Value::Null) => Vec::new(),
            Some(levels) => serde_json::from_value(levels.clone()).map_err(|e| {
                format!(
                    "levels: {e} (expected [{{\"level\": \"warning\", \"min\": 30, \"max\": 50}}])"
                )
            })?,
        };
        for range in &levels {
            if !LEVELS.contains(&range.level.as_str()) {
                return Err(format!(
                    "levels: `{}` is not a level; use one of {}",
                    range.level,
                    LEVELS.join(", ")
                ));
            }
            if let (Some(min), Some(max)) = (range.min, range.max)
                && min >= max
            {
                return Err(format!(
                    "levels: the range of `{}` is empty: its min ({min}) must be less than its max ({max})",
                    range.level
                ));
            }
        }
        Ok(Interpreter {
            value_map,
            expression,
            levels,
        })
    }

    /// Interprets one value.
    pub fn apply(&self, engine: &Engine, raw: &Value) -> Result<Interpreted, String> {
        let mut value = raw.clone();
        if let Some(mapped) = self.value_map.as_ref().and_then(|m| m.get(&key_of(raw))) {
            value = mapped.clone();
        }
        if let Some(ast) = &self.expression {
            let mut scope = Scope::new();
            scope.push("value", to_dynamic(&value)?);
            let result = engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
                .map_err(|e| format!("the expression failed: {e}"))?;
            value = from_dynamic(result)?;
        }
        let level = match (self.levels.is_empty(), value.as_f64()) {
            (false, Some(n)) => Some(
                self.levels
                    .iter()
                    .find(|l| l.min.is_none_or(|min| n >= min) && l.max.is_none_or(|max| n < max))
                    .map_or_else(|| NORMAL.to_string(), |l| l.level.clone()),
            ),
            _ => None,
        };
        let raw = (value != *raw).then(|| raw.clone());
        Ok(Interpreted { value, raw, level })
    }
}

/// An interpreter as stored (see the `interpreter` table).
pub struct InterpreterSpec<'a> {
    /// `None`: every class of the tenant.
    pub class: Option<i64>,
    pub attribute: &'a str,
    pub value_map: Option<&'a Value>,
    pub expression: Option<&'a str>,
    pub levels: Option<&'a Value>,
}

/// The interpreters of one tenant, by attribute, then class (`None`: every class).
#[derive(Default)]
pub struct TenantInterpreters {
    by_attribute: HashMap<String, HashMap<Option<i64>, Result<Interpreter, String>>>,
}

impl TenantInterpreters {
    pub fn compile<'a>(
        engine: &Engine,
        stored: impl Iterator<Item = InterpreterSpec<'a>>,
    ) -> TenantInterpreters {
        let mut by_attribute: HashMap<String, HashMap<_, _>> = HashMap::new();
        for i in stored {
            let compiled = Interpreter::compile(engine, i.value_map, i.expression, i.levels)
                .map_err(|e| format!("the interpreter of `{}` cannot be used: {e}", i.attribute));
            by_attribute
                .entry(i.attribute.to_string())
                .or_default()
                .insert(i.class, compiled);
        }
        TenantInterpreters { by_attribute }
    }

    /// The interpreter of `attribute` for a device of `class`, if any.
    pub fn find(&self, class: i64, attribute: &str) -> Option<&Result<Interpreter, String>> {
        // Per sample on the ingest path: a lookup by the borrowed name, no allocation.
        let of_attribute = self.by_attribute.get(attribute)?;
        of_attribute
            .get(&Some(class))
            .or_else(|| of_attribute.get(&None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_must_be_known_and_their_ranges_not_empty() {
        let engine = engine();
        let compile =
            |levels: Value| Interpreter::compile(&engine, None, None, Some(&levels)).map(|_| ());
        let unknown = compile(serde_json::json!([{"level": "hot", "min": 1}]));
        assert!(unknown.is_err_and(|e| e.contains("`hot` is not a level")));
        let inverted = compile(serde_json::json!([{"level": "warning", "min": 50, "max": 30}]));
        assert!(inverted.is_err_and(|e| e.contains("min (50) must be less than its max (30)")));
        assert_eq!(
            compile(serde_json::json!([{"level": "faulty", "max": 0}])),
            Ok(())
        );
    }

    #[test]
    fn maps_expressions_and_levels_apply_in_order() {
        let engine = engine();
        let levels = serde_json::json!([
            {"level": "warning", "min": 30, "max": 50},
            {"level": "faulty", "min": 50}
        ]);
        let scaled = Interpreter::compile(&engine, None, Some("value / 10.0"), Some(&levels))
            .expect("compiles");
        let at = |raw: i64| scaled.apply(&engine, &raw.into()).expect("applies");
        assert_eq!(
            at(215),
            Interpreted {
                value: 21.5.into(),
                raw: Some(215.into()),
                level: Some(NORMAL.into())
            }
        );
        assert_eq!(at(350).level.as_deref(), Some("warning"));
        assert_eq!(at(500).level.as_deref(), Some("faulty"));
        let map = serde_json::json!({"1": "open", "0": "closed"});
        let door = Interpreter::compile(&engine, Some(&map), None, None).expect("compiles");
        assert_eq!(
            door.apply(&engine, &1.into()).expect("applies").value,
            Value::from("open")
        );
        assert_eq!(
            door.apply(&engine, &7.into()).expect("applies").raw,
            None,
            "unmapped values pass"
        );
    }

    #[test]
    fn bad_interpreters_and_runaway_expressions_fail_clearly() {
        let engine = engine();
        assert!(
            Interpreter::compile(&engine, None, Some("value +"), None)
                .unwrap_err()
                .contains("does not compile")
        );
        let bad_levels = serde_json::json!([{"name": "x"}]);
        assert!(
            Interpreter::compile(&engine, None, None, Some(&bad_levels))
                .unwrap_err()
                .contains("levels")
        );
        let looping =
            Interpreter::compile(&engine, None, Some("{ let x = 0; loop { x += 1; } }"), None);
        if let Ok(looping) = looping {
            assert!(
                looping
                    .apply(&engine, &1.into())
                    .unwrap_err()
                    .contains("failed")
            );
        }
        let text = Interpreter::compile(&engine, None, Some("value * 2"), None).expect("compiles");
        assert!(
            text.apply(&engine, &serde_json::json!([1]))
                .unwrap_err()
                .contains("expressions take")
        );
    }
}
