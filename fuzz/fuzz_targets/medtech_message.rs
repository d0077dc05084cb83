//! The golden device mappings of `medtech-mapping/tests/golden` + bytes as a device message ->
//! normalize never panics. A JSON object with a `Body` key is taken as the whole event,
//! anything else as the message body (wrapped with `envelope`).
#![no_main]

use std::sync::OnceLock;

use carebridge_medtech_mapping::{envelope, DeviceMapping, Normalizer};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

macro_rules! golden {
    ($($case:literal),* $(,)?) => {
        [$(include_str!(concat!("../../medtech-mapping/tests/golden/", $case, "/devicecontent.json"))),*]
    };
}

const MAPPINGS: &[&str] = &golden![
    "iomt-doc-bloodpressure",
    "iomt-doc-multiple-matches",
    "iomt-doc-multiple-measurements",
    "iomt-doc-multiple-measurements-from-array",
    "iomt-doc-transform-data",
    "iomt-sample-basic",
    "learn-calculatedcontent-heartrate",
    "learn-iotcentral-vitals",
    "learn-iotjsonpathcontent-heartrate",
];

fn normalizers() -> &'static [Normalizer] {
    static N: OnceLock<Vec<Normalizer>> = OnceLock::new();
    N.get_or_init(|| {
        MAPPINGS
            .iter()
            .map(|text| {
                let mapping = DeviceMapping::from_json(text).expect("golden mapping loads");
                Normalizer::new(&mapping).expect("golden mapping compiles")
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let event = match &value {
        Value::Object(m) if m.contains_key("Body") => value,
        _ => envelope(value),
    };
    for normalizer in normalizers() {
        let (result, _explanation) = normalizer.normalize_explained(&event, 0);
        if let Ok(measurements) = result {
            let _ = serde_json::to_vec(&measurements);
        }
    }
});
