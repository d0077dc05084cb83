use super::*;

#[test]
fn ten_apis_with_the_seed_parameters() {
    let apis = desired_apis(&RegistrationOptions::default());
    assert_eq!(apis.len(), 10);
    let outbound: Vec<_> = apis.iter().filter(|a| a.outbound).collect();
    assert_eq!(outbound.len(), 5);
    for a in &outbound {
        assert_eq!(a.parameters.len(), 1);
        assert_eq!(a.parameters[0].kind, ParameterType::String);
        assert!(!a.parameters[0].is_optional);
    }
    let sync_in = apis
        .iter()
        .find(|a| a.unique_name == "msemr_SyncDevicesInbound")
        .unwrap();
    let names: Vec<_> = sync_in
        .parameters
        .iter()
        .map(|p| p.unique_name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "StatusCode",
            "ErrorMessage",
            "OutboundRequest",
            "FlowUrl",
            "Content"
        ]
    );
    assert_eq!(sync_in.parameters[0].kind.code(), 7);
    let assign_in = apis
        .iter()
        .find(|a| a.unique_name == "msemr_AssignDeviceInbound")
        .unwrap();
    assert_eq!(assign_in.parameters.len(), 4);
}

#[test]
fn finding_separates_fixable_from_fixed_columns() {
    assert_eq!(finding_for(vec![], vec![]), Finding::Correct);
    assert_eq!(
        finding_for(vec!["displayname"], vec![]),
        Finding::Differs {
            fields: vec!["displayname"],
            fixable: true
        }
    );
    assert_eq!(
        finding_for(vec!["displayname"], vec!["isfunction"]),
        Finding::Differs {
            fields: vec!["isfunction", "displayname"],
            fixable: false
        }
    );
}
