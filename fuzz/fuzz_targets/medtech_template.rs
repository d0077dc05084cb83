//! Bytes -> device mapping and FHIR destination mapping. Loading never panics; a device
//! mapping that loads compiles into a `Normalizer`; a loaded mapping written back with
//! `to_value` loads again and writes the same JSON.
#![no_main]

use carebridge_medtech_mapping::{DeviceMapping, FhirMapping, Normalizer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mapping) = DeviceMapping::from_json(text) {
        if let Err(e) = Normalizer::new(&mapping) {
            panic!("a loaded device mapping does not compile: {e}");
        }
        let written = mapping.to_value();
        match DeviceMapping::from_value(&written) {
            Ok(again) => assert_eq!(written, again.to_value(), "device mapping to_value not stable"),
            Err(e) => panic!("device mapping written by to_value does not load: {e}\n{written}"),
        }
    }
    if let Ok(mapping) = FhirMapping::from_json(text) {
        let written = mapping.to_value();
        match FhirMapping::from_value(&written) {
            Ok(again) => assert_eq!(written, again.to_value(), "FHIR mapping to_value not stable"),
            Err(e) => panic!("FHIR mapping written by to_value does not load: {e}\n{written}"),
        }
    }
});
