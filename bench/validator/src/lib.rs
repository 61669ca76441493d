//! The same exported function, `validate(ptr, len) -> violations`, compiled three ways:
//! no validation (baseline: parse only), Sightline's compact evaluator (`compact`), and
//! the `jsonschema` crate (`jsonschema`). The difference in wasm size is what each
//! validator costs a browser build.

const PLAN: &str = include_str!("../../../example-site/tracking-plan.json");

#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn alloc(len: usize) -> *mut u8 {
    let mut v = Vec::<u8>::with_capacity(len);
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

/// Validates one message (JSON) and returns the number of violations.
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn validate(ptr: *const u8, len: usize) -> u32 {
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    let text = std::str::from_utf8(bytes).unwrap_or("{}");
    count_violations(text)
}

#[cfg(any(feature = "compact", feature = "compact-regex-lite"))]
pub fn count_violations(text: &str) -> u32 {
    use std::sync::OnceLock;
    static P: OnceLock<Option<tracking_plan::Plan>> = OnceLock::new();
    let plan = P.get_or_init(|| tracking_plan::Plan::from_json(PLAN).ok());
    match (plan, serde_json::from_str::<tracking_plan::Message>(text)) {
        (Some(p), Ok(m)) => p.validate(&m, text.len()).len() as u32,
        _ => u32::MAX,
    }
}

#[cfg(feature = "jsonschema")]
pub fn count_violations(text: &str) -> u32 {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static V: OnceLock<HashMap<String, jsonschema::Validator>> = OnceLock::new();
    let validators = V.get_or_init(|| {
        let plan: serde_json::Value = serde_json::from_str(PLAN).unwrap_or_default();
        let mut out = HashMap::new();
        if let Some(events) = plan["events"].as_object() {
            for (name, def) in events {
                let mut schema = def["properties"].clone();
                strip_extensions(&mut schema);
                if let Ok(v) = jsonschema::validator_for(&schema) {
                    out.insert(name.clone(), v);
                }
            }
        }
        out
    });
    let Ok(m) = serde_json::from_str::<tracking_plan::Message>(text) else { return u32::MAX };
    let props = m.properties.unwrap_or_default();
    match m.event.as_deref().and_then(|e| validators.get(e)) {
        Some(v) => v.iter_errors(&props).count() as u32,
        None => 1,
    }
}

/// jsonschema would treat `x-pii` as an unknown keyword (ignored); drop it for clarity.
#[cfg(feature = "jsonschema")]
fn strip_extensions(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !k.starts_with("x-"));
            m.values_mut().for_each(strip_extensions);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_extensions),
        _ => {}
    }
}

#[cfg(not(any(feature = "compact", feature = "compact-regex-lite", feature = "jsonschema")))]
pub fn count_violations(text: &str) -> u32 {
    let _ = PLAN;
    serde_json::from_str::<tracking_plan::Message>(text).map_or(u32::MAX, |m| u32::from(m.event.is_some()))
}
