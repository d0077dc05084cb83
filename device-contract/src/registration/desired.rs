//! The desired state: the custom APIs and parameters that should exist.

use serde_json::{json, Value};

use super::{ParameterType, ProcessingStepType, RegistrationOptions};
use crate::DeviceProcess;

#[derive(Clone, Debug)]
pub(super) struct ParamSpec {
    pub(super) unique_name: String,
    pub(super) display_name: String,
    pub(super) description: String,
    pub(super) kind: ParameterType,
    pub(super) is_optional: bool,
}

#[derive(Clone, Debug)]
pub(super) struct ApiSpec {
    pub(super) unique_name: String,
    pub(super) display_name: String,
    pub(super) description: String,
    pub(super) step_type: ProcessingStepType,
    pub(super) parameters: Vec<ParamSpec>,
    /// Outbound APIs are assigned to the category.
    pub(super) outbound: bool,
}

impl ApiSpec {
    pub(super) fn body(&self) -> Value {
        json!({
            "uniquename": self.unique_name,
            "name": self.unique_name,
            "displayname": self.display_name,
            "description": self.description,
            "bindingtype": 0,
            "isfunction": false,
            "allowedcustomprocessingsteptype": self.step_type.code(),
            "CustomAPIRequestParameters": self.parameters.iter().map(ParamSpec::body).collect::<Vec<_>>(),
        })
    }
}

impl ParamSpec {
    pub(super) fn body(&self) -> Value {
        json!({
            "uniquename": self.unique_name,
            "name": self.unique_name,
            "displayname": self.display_name,
            "description": self.description,
            "type": self.kind.code(),
            "isoptional": self.is_optional,
        })
    }
}

pub(super) fn desired_apis(options: &RegistrationOptions) -> Vec<ApiSpec> {
    let p = &options.names.parameters;
    let param = |name: &str, display: &str, description: &str, kind, optional| ParamSpec {
        unique_name: name.to_owned(),
        display_name: display.to_owned(),
        description: description.to_owned(),
        kind,
        is_optional: optional,
    };
    let mut out = Vec::with_capacity(10);
    for process in DeviceProcess::ALL {
        let apis = options.names.apis.get(process);
        out.push(ApiSpec {
            unique_name: apis.outbound.clone(),
            display_name: process.outbound_display_name().to_owned(),
            description: format!(
                "{}: triggers the flow that calls the device vendor ({}).",
                process.display_name(),
                process.dataverse_trigger()
            ),
            step_type: options.outbound_step_type,
            parameters: vec![param(
                &p.outbound_request,
                "Outbound request",
                "Outbound request sent to the Power Automate flow",
                ParameterType::String,
                false,
            )],
            outbound: true,
        });
        let mut parameters = vec![
            param(
                &p.status_code,
                "Status code",
                "Status of the operation",
                ParameterType::Integer,
                false,
            ),
            param(
                &p.error_message,
                "Error message",
                "Error messages for an unsuccessful operation",
                ParameterType::String,
                true,
            ),
            param(
                &p.outbound_request,
                "Outbound request",
                "Outbound request sent to the Power Automate flow",
                ParameterType::String,
                false,
            ),
            param(
                &p.flow_url,
                "Flow URL",
                "URL of the Power Automate flow run history",
                ParameterType::String,
                true,
            ),
        ];
        if process.allows_content() {
            parameters.push(param(
                &p.content,
                "Content",
                "List of devices in the ResponseFormat/Devices JSON format",
                ParameterType::String,
                true,
            ));
        }
        out.push(ApiSpec {
            unique_name: apis.inbound.clone(),
            display_name: process.inbound_display_name().to_owned(),
            description: format!(
                "{}: processes the flow's response in Dataverse.",
                process.display_name()
            ),
            step_type: options.inbound_step_type,
            parameters,
            outbound: false,
        });
    }
    out
}
