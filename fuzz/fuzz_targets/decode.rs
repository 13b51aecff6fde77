//! Fuzzes the decoder and the importer: any bytes must give a model or an error, never a
//! panic, a hang or unbounded memory; an imported model must export and print.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(proto) = intone::onnx::decode(bytes::Bytes::copy_from_slice(data), "fuzz input") else {
        return;
    };
    let Ok(model) = intone::onnx::import(proto) else {
        return;
    };
    let exported = intone::onnx::export(&model).expect("an imported model exports");
    let again = intone::onnx::import(exported).expect("an exported model imports again");
    let _ = intone::onnx::text::model_to_text(&again);
    let _ = intone::ir::verify::verify(&again.graph, None);
});
