use super::eval::{false_on_scalar, query_scan};
use super::*;
use serde_json::json;

/// The `..` scan that skips scalars finds the same tokens, and fails the same way, as the
/// scan that tests every node.
#[test]
fn skipping_scalars_in_a_scan_changes_nothing() {
    let docs = [
        json!({"Body": {"hr": 70, "a": [1, "x", {"hr": 2}, [3, {"b": null}]], "m": {"hr": {"v": 1}}}}),
        json!([1, 2, {"hr": 3}, "hr", true, null, [[{"sys": 1, "dia": 2}]]]),
        json!({"c": 5, "d": {"c": "5"}, "e": [5, {"c": 6}]}),
        json!(7),
    ];
    let queries = [
        ("$..[?(@hr)]", true),
        ("$..[?(@.sys && @.dia)]", true),
        ("$..[?(@.c == 5)]", true),
        ("$..[?(@.c > 4 || @[0] == 5)]", true),
        ("$..[?(@[0])]", true),
        ("$..[?(@.*)]", true),
        ("$..[?(@ == 5)]", false),
        ("$..[?(@ > 4)]", false),
        ("$..[?(5 == @.c)]", false),
        ("$..[?($.c == 5)]", false),
        ("$..[?(@.c || @ == 5)]", false),
        ("$..[?(@.c && @ == 5)]", true),
        ("$..[?(@ == 5 && @.c)]", false),
        ("$..[?(@.a[0:1:0])]", false),
    ];
    for (text, skips) in queries {
        let path = JsonPath::parse(text).unwrap();
        let Some(Filter::QueryScan(q)) = path.filters.last() else {
            panic!("{text}: {:?}", path.filters);
        };
        assert_eq!(false_on_scalar(q), skips, "{text}");
        for doc in &docs {
            let scan = |skip: bool| {
                let mut out = Vec::new();
                query_scan(q, skip, doc, doc, &mut out).map(|()| out)
            };
            assert_eq!(scan(false_on_scalar(q)), scan(false), "{text} over {doc}");
        }
    }
}

/// The tokens `path` selects from `v`; the same path over the `Doc` parsed from `v`'s text
/// must select the same tokens in the same order.
fn sel(path: &str, v: &Value) -> Vec<Value> {
    let p = JsonPath::parse(path).unwrap();
    let out: Vec<Value> = p.select_tokens(v).unwrap().into_iter().cloned().collect();
    let text = v.to_string();
    let doc = crate::Doc::parse(&text).unwrap();
    let over_doc: Vec<Value> = p
        .select_tokens(&doc)
        .unwrap()
        .into_iter()
        .map(JsonNode::to_value)
        .collect();
    assert_eq!(over_doc, out, "{path} over Doc and Value");
    out
}

fn store() -> Value {
    // The "Store" document used throughout Newtonsoft's SelectToken documentation.
    json!({
      "Stores": ["Lambton Quay", "Willis Street"],
      "Manufacturers": [
        {"Name": "Acme Co", "Products": [{"Name": "Anvil", "Price": 50}]},
        {"Name": "Contoso", "Products": [
          {"Name": "Elbow Grease", "Price": 99.95},
          {"Name": "Headlight Fluid", "Price": 4}
        ]}
      ]
    })
}

#[test]
fn newtonsoft_documented_queries() {
    let o = store();
    assert_eq!(sel("Manufacturers[0].Name", &o), vec![json!("Acme Co")]);
    assert_eq!(
        sel("Manufacturers[0].Products[0].Price", &o),
        vec![json!(50)]
    );
    assert_eq!(
        sel("Manufacturers[1].Products[0].Name", &o),
        vec![json!("Elbow Grease")]
    );
    assert_eq!(
        sel("$..Products[?(@.Price >= 50)].Name", &o),
        vec![json!("Anvil"), json!("Elbow Grease")]
    );
    assert_eq!(sel("$.Manufacturers[?(@.Name == 'Acme Co')]", &o).len(), 1);
    assert_eq!(sel("$.Stores[*]", &o).len(), 2);
    assert_eq!(sel("$.Manufacturers[*].Name", &o).len(), 2);
}

#[test]
fn medtech_docs_forms() {
    let env = json!({"Body": {"heartRate": "78", "endDate": "2023-03-13T22:46:01.8750000", "deviceId": "device01"}});
    // `@heartRate` is shorthand for `@.heartRate`; the deep scan includes the root itself.
    let m = sel("$..[?(@heartRate)]", &env);
    assert_eq!(m, vec![env["Body"].clone()]);
    let iot = json!({"Body": {"HeartRate": "78"}, "SystemProperties": {}});
    assert_eq!(sel("$..[?(@Body.HeartRate)]", &iot), vec![iot.clone()]);
    assert_eq!(sel("$.Body.HeartRate", &iot), vec![json!("78")]);
    let arr = json!({"Body": [{"heartRate": 1}, {"steps": 2}, {"heartRate": 3}]});
    assert_eq!(sel("$..[?(@heartRate)]", &arr).len(), 2);
    assert_eq!(
        sel("$.Body[?(@.heartRate > 1)]", &arr),
        vec![json!({"heartRate": 3})]
    );
}

#[test]
fn extra_property_matches_a_materialized_root() {
    let event = json!({"Body": {"a": [1, 2], "id": "x"}, "matchedToken": "old"});
    let token = json!({"v": [{"w": 5}]});
    let mut full = event.clone();
    full["matchedToken"] = token.clone();
    for p in [
        "$.matchedToken.v[0].w",
        "$.Body.id",
        "$.matchedToken",
        "$.nope.x",
        "$.Body.a[*]",
        "$.matchedToken.v[?(@.w == 5)]",
    ] {
        let path = JsonPath::parse(p).unwrap();
        let fast = path
            .select_token_with_extra(&event, "matchedToken", &token)
            .unwrap();
        let slow = path.select_token(&full);
        assert_eq!(fast.map(|o| o.cloned()), slow.map(|o| o.cloned()), "{p}");
    }
    let needs_root = JsonPath::parse("$..x").unwrap();
    assert!(needs_root
        .select_token_with_extra(&event, "matchedToken", &token)
        .is_none());
}

#[test]
fn select_token_errors_on_several() {
    let v = json!({"a": [1, 2]});
    let p = JsonPath::parse("$.a[*]").unwrap();
    assert_eq!(
        p.select_token(&v).unwrap_err().reason,
        "Path returned multiple tokens."
    );
    assert_eq!(
        JsonPath::parse("$.b").unwrap().select_token(&v).unwrap(),
        None
    );
}

#[test]
fn wildcards_follow_newtonsoft() {
    let v = json!({"o": {"x": 1, "y": 2}, "a": [1, 2]});
    assert_eq!(sel("$.o.*", &v), vec![json!(1), json!(2)]);
    // `[*]` only applies to arrays and `.*` only to objects.
    assert!(sel("$.o[*]", &v).is_empty());
    assert!(sel("$.a.*", &v).is_empty());
    assert_eq!(sel("$.a[*]", &v), vec![json!(1), json!(2)]);
    assert_eq!(sel("$['o']['x']", &v), vec![json!(1)]);
    assert_eq!(sel("$.o['x','y']", &v), vec![json!(1), json!(2)]);
    assert_eq!(sel("$..x", &v), vec![json!(1)]);
}

#[test]
fn slices_and_indexes() {
    let v = json!([0, 1, 2, 3, 4]);
    assert_eq!(sel("$[1:3]", &v), vec![json!(1), json!(2)]);
    assert_eq!(sel("$[-2:]", &v), vec![json!(3), json!(4)]);
    assert_eq!(sel("$[::2]", &v), vec![json!(0), json!(2), json!(4)]);
    assert_eq!(sel("$[::-1]", &v).len(), 5);
    assert_eq!(sel("$[0,4]", &v), vec![json!(0), json!(4)]);
    assert!(sel("$[9]", &v).is_empty());
    assert!(JsonPath::parse("$[-1]").unwrap().select_tokens(&v).is_err());
    assert!(JsonPath::parse("$[::0]")
        .unwrap()
        .select_tokens(&v)
        .is_err());
}

#[test]
fn filters_and_or_regex_and_coercion() {
    let v = json!([
        {"n": "a", "v": 1, "t": true},
        {"n": "b", "v": 2.0, "t": false},
        {"n": "c", "v": "3"}
    ]);
    assert_eq!(sel("$[?(@.v == 2)]", &v).len(), 1, "integer equals float");
    assert_eq!(sel("$[?(@.v === 2)]", &v).len(), 1);
    assert_eq!(sel("$[?(@.v == '3')]", &v).len(), 1);
    assert_eq!(
        sel("$[?(@.v == 3)]", &v).len(),
        0,
        "no string/number coercion"
    );
    assert_eq!(sel("$[?(@.n != 'a')]", &v).len(), 2);
    assert_eq!(sel("$[?(@.n =~ /^[AB]$/i)]", &v).len(), 2);
    assert_eq!(sel("$[?(@.v >= 1 && @.t == true)]", &v).len(), 1);
    assert_eq!(sel("$[?(@.n == 'a' || @.n == 'c')]", &v).len(), 2);
    assert_eq!(sel("$[?(@.t)]", &v).len(), 2, "exists");
    assert_eq!(sel("$[?(@.missing != 1)]", &v).len(), 0);
}

#[test]
fn newtonsoft_and_or_nesting() {
    // `a && b || c` is `a && (b || c)` in Newtonsoft.
    let v = json!([{"a": 0, "b": 0, "c": 1}]);
    assert_eq!(sel("$[?(@.a == 1 && @.b == 1 || @.c == 1)]", &v).len(), 0);
    assert_eq!(sel("$[?(@.c == 1 || @.a == 1 && @.b == 1)]", &v).len(), 1);
}

#[test]
fn parse_errors_use_newtonsoft_wording() {
    for (p, msg) in [
        ("$.a[", "Path ended with open indexer."),
        ("$.a.", "Unexpected end while parsing path."),
        ("$.a[?(@.b == 'x)]", "Path ended with an open string."),
        ("$.a]", "Unexpected character while parsing path: ]"),
        ("$.a[0]b", "Unexpected character following indexer: b"),
        ("$[?(@.a ~ 1)]", "Could not read query operator."),
    ] {
        assert_eq!(JsonPath::parse(p).unwrap_err().reason, msg, "{p}");
    }
}

#[test]
fn comparison_conversion_failures_are_errors() {
    let v = json!([{"v": 5}]);
    assert!(JsonPath::parse("$[?(@.v > 'abc')]")
        .unwrap()
        .select_tokens(&v)
        .is_err());
    assert_eq!(sel("$[?(@.v > '4')]", &v).len(), 1);
}

#[test]
fn no_panic_on_odd_input() {
    let v = json!({"a": [1, {"b": null}]});
    for p in [
        "",
        "$",
        "$$",
        "..",
        "$..",
        "[",
        "]",
        "$[?(",
        "$[?(@",
        "$[?(@.a",
        "$[?(@.a ==",
        "$[?(@.a == 1",
        "$[?(@.a == 1)",
        "$['a'",
        "$['a',",
        "$[1:2:3:4]",
        "$[-]",
        "@",
        "$[?(@.a == 1 &",
        "$[?(@.a == /x",
        "$[ ",
        "$[*",
        "$.a[?($.a)]",
        "$.a[?(@ == null)]",
        "$..*",
        "$..['a','b']",
        "$(a)",
        "a.b.c",
        "$[?(@.a =~ '(')]",
    ] {
        if let Ok(p) = JsonPath::parse(p) {
            let over_value = p
                .select_tokens(&v)
                .map(|t| t.into_iter().cloned().collect::<Vec<_>>());
            let doc = crate::Doc::borrowed(&v);
            let over_doc = p
                .select_tokens(&doc)
                .map(|t| t.into_iter().map(JsonNode::to_value).collect::<Vec<_>>());
            assert_eq!(over_doc, over_value);
        }
    }
}
