#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| meshwork_proxy::fuzzing::http_detection(data));
