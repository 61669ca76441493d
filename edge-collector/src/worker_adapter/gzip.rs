//! Gzip through the runtime's `CompressionStream` and `DecompressionStream` (native in
//! workerd), for the lake's objects: no compressor in the wasm (flate2's cost 49 KB of
//! it, measured; see `crate::lake`). Decides nothing.

use js_sys::{Function, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use worker::{Error, Result};

#[wasm_bindgen]
extern "C" {
    type CompressionStream;
    #[wasm_bindgen(constructor)]
    fn new(format: &str) -> CompressionStream;
    type DecompressionStream;
    #[wasm_bindgen(constructor)]
    fn new(format: &str) -> DecompressionStream;
}

fn js(e: JsValue) -> Error {
    Error::JsError(e.as_string().unwrap_or_else(|| "stream error".into()))
}

/// `bytes` through a transform stream, collected.
async fn through(bytes: &[u8], transform: &JsValue) -> Result<Vec<u8>> {
    let source = web_sys::Response::new_with_opt_u8_array(Some(&mut bytes.to_vec())).map_err(js)?;
    let body = source
        .body()
        .ok_or_else(|| Error::RustError("no body stream".into()))?;
    let pipe: Function = Reflect::get(&body, &"pipeThrough".into())
        .map_err(js)?
        .dyn_into()
        .map_err(js)?;
    let piped = pipe.call1(&body, transform).map_err(js)?;
    let out =
        web_sys::Response::new_with_opt_readable_stream(Some(piped.unchecked_ref())).map_err(js)?;
    let buf = JsFuture::from(out.array_buffer().map_err(js)?)
        .await
        .map_err(js)?;
    Ok(Uint8Array::new(&buf).to_vec())
}

pub async fn gzip(text: &str) -> Result<Vec<u8>> {
    through(text.as_bytes(), &CompressionStream::new("gzip")).await
}

/// The text of gzipped bytes, or `None` when they are not gzip of UTF-8.
pub async fn gunzip(bytes: &[u8]) -> Option<String> {
    let raw = through(bytes, &DecompressionStream::new("gzip"))
        .await
        .ok()?;
    String::from_utf8(raw).ok()
}
