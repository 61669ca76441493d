//! Regular expressions for the `pattern` keyword: decides which engine evaluates them.
//!
//! Natively and in the collector: `regex-lite`, which runs in linear time, so a plan's
//! pattern can never be made to backtrack for seconds by crafted input. In the browser
//! SDK (feature `js-regex`): the browser's own `RegExp`, which costs the SDK's wasm
//! nothing and is exactly the ECMA-262 dialect JSON Schema specifies; `regex-lite` would
//! add most of the validator's size. Plans are linted natively, so a pattern that passes
//! `sightline plan lint` compiles in both engines.

#[cfg(not(all(feature = "js-regex", target_arch = "wasm32")))]
#[cfg(feature = "regex")]
#[derive(Debug)]
pub struct Pattern(regex_lite::Regex);

#[cfg(not(all(feature = "js-regex", target_arch = "wasm32")))]
#[cfg(feature = "regex")]
impl Pattern {
    pub fn new(source: &str) -> Result<Self, String> {
        regex_lite::Regex::new(source)
            .map(Pattern)
            .map_err(|e| e.to_string())
    }

    /// Unanchored search, as JSON Schema requires.
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

#[cfg(all(feature = "js-regex", target_arch = "wasm32"))]
mod js {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_name = RegExp)]
        #[derive(Debug)]
        pub type JsRegExp;
        #[wasm_bindgen(constructor, catch, js_class = "RegExp")]
        pub fn new(pattern: &str, flags: &str) -> Result<JsRegExp, JsValue>;
        #[wasm_bindgen(method)]
        pub fn test(this: &JsRegExp, text: &str) -> bool;
    }
}

#[cfg(all(feature = "js-regex", target_arch = "wasm32"))]
#[derive(Debug)]
pub struct Pattern(js::JsRegExp);

#[cfg(all(feature = "js-regex", target_arch = "wasm32"))]
impl Pattern {
    pub fn new(source: &str) -> Result<Self, String> {
        js::JsRegExp::new(source, "u").map(Pattern).map_err(|e| {
            e.as_string()
                .unwrap_or_else(|| "invalid regular expression".into())
        })
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.test(text)
    }
}

#[cfg(not(any(feature = "regex", all(feature = "js-regex", target_arch = "wasm32"))))]
compile_error!("tracking-plan needs a pattern engine: feature `regex`, or `js-regex` on wasm32");
