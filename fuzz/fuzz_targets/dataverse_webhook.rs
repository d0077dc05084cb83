//! Dataverse webhook bodies (the `RemoteExecutionContext` a service endpoint posts): decoding,
//! every accessor, the device-data trigger built from it, and writeback's change event never
//! panic, whatever the bytes.
#![no_main]

use carebridge_dataverse_client::webhook::{ContextValue, RemoteExecutionContext};
use carebridge_device_contract::{ContractNames, Trigger};
use libfuzzer_sys::fuzz_target;

fn touch(value: &ContextValue) {
    let _ = (value.as_str(), value.as_uuid(), value.as_datetime());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ctx) = RemoteExecutionContext::from_json(data) {
        for (_, v) in ctx
            .input_parameters
            .iter()
            .chain(&ctx.output_parameters)
            .chain(&ctx.pre_entity_images)
            .chain(&ctx.post_entity_images)
        {
            touch(v);
        }
        let _ = ctx.input_parameter("OutboundRequest").map(touch);
        for image in [
            ctx.target_entity(),
            ctx.post_entity_image(None),
            ctx.pre_entity_image(None),
            ctx.post_entity_image(Some("PostImage")),
        ]
        .into_iter()
        .flatten()
        {
            for (name, _) in image.attributes {
                let _ = image.attribute(name).map(touch);
            }
        }
        let names = ContractNames::default();
        if let Ok(trigger) = Trigger::from_webhook(&ctx, None, &names) {
            let _ = (trigger.request(), trigger.vendor_call(), trigger.idempotency_key());
        }
    }
    let _ = Trigger::from_http_body(data, None, &ContractNames::default());
    let _ = carebridge_writeback::ChangeEvent::from_webhook(data, None);
    let _ = carebridge_writeback::ChangeEvent::from_webhook(data, Some("PostImage"));
});
