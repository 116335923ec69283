//! Any bytes as a QAPI response body: the reader must classify it, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = schemas::qapi::parse_response(data) {
        if let schemas::qapi::ResultObject::Rows(rows) = r.object {
            for row in rows {
                let _ = schemas::qapi::RowFacts::of(&row);
            }
        }
    }
});
