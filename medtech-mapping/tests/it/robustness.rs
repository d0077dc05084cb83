//! No panic on any template or message: mutate the golden inputs with a small deterministic
//! generator and feed them to every parser and to normalization. (A `cargo fuzz` target can
//! reuse the golden folders as its seed corpus.)

use carebridge_medtech_mapping::{
    envelope, DeviceMapping, Doc, FhirMapping, JmesPath, JsonNode, JsonPath, Normalizer,
};

use crate::golden::cases;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap()
    }
}

const ALPHABET: &[u8] = b"$@.[]()?*'\",:-0123456789 =!<>&|~/abcxyzTMB{}`\\\n";

fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut bytes = input.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let pos = rng.below(bytes.len() + 1);
        match rng.below(3) {
            0 if pos < bytes.len() => {
                bytes.remove(pos);
            }
            1 if pos < bytes.len() => bytes[pos] = ALPHABET[rng.below(ALPHABET.len())],
            _ => bytes.insert(pos, ALPHABET[rng.below(ALPHABET.len())]),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn mutated_templates_and_messages_never_panic() {
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut loaded = 0;
    for case in cases() {
        let mapping_text = std::fs::read_to_string(case.dir.join("devicecontent.json")).unwrap();
        let message_text = std::fs::read_to_string(&case.message_file).unwrap();
        let good = Normalizer::new(&DeviceMapping::from_json(&mapping_text).unwrap()).unwrap();
        for _ in 0..300 {
            let m = mutate(&mut rng, &mapping_text);
            if let Ok(mapping) = DeviceMapping::from_json(&m) {
                loaded += 1;
                let n = Normalizer::new(&mapping).unwrap();
                if let Ok(v) = serde_json::from_str(&message_text) {
                    let ev = if case.is_envelope { v } else { envelope(v) };
                    let doc = Doc::borrowed(&ev);
                    let (r, ex) = n.normalize_explained(&ev, 0);
                    let (r_doc, ex_doc) = n.normalize_explained(&doc, 0);
                    assert_eq!(
                        r.map_err(|e| e.to_string()),
                        r_doc.map_err(|e| e.to_string())
                    );
                    assert_eq!(ex, ex_doc);
                }
            }
            let _ = FhirMapping::from_json(&m);
            let msg = mutate(&mut rng, &message_text);
            let doc = Doc::parse(&msg);
            match serde_json::from_str::<serde_json::Value>(&msg) {
                Ok(v) => {
                    // The pipeline's parse accepts what serde_json accepts, and the
                    // measurements are the same.
                    let doc = doc.unwrap_or_else(|e| panic!("{msg}: {e}"));
                    let same =
                        |a: carebridge_medtech_mapping::Result<_>,
                         b: carebridge_medtech_mapping::Result<_>| {
                            assert_eq!(
                                a.map_err(|e| e.to_string()),
                                b.map_err(|e| e.to_string()),
                                "{msg}"
                            );
                        };
                    same(good.normalize(&v, 0), good.normalize(&doc, 0));
                    same(
                        good.normalize(&envelope(v), 0),
                        good.normalize(&Doc::envelope(doc), 0),
                    );
                }
                Err(e) => assert!(
                    doc.is_err(),
                    "serde_json refused {msg} ({e}), Doc accepted it"
                ),
            }
        }
    }
    assert!(
        loaded > 0,
        "the mutations never produced a loadable mapping"
    );
}

#[test]
fn random_expressions_never_panic() {
    let mut rng = Rng(0x00DD_BA11_5EED_0002);
    let data = serde_json::json!({"Body": {"a": [1, {"b": "x", "c": null}, [2.5, true]], "d": {"e": "2023-01-01T00:00:00Z"}}, "matchedToken": [1, 2]});
    let seeds = [
        "$..[?(@heartRate)]",
        "$.matchedToken.a[0]",
        "$..[?(@.b == 'x' && @.c != 1 || @.d)]",
        "$.Body.a[1:3:-1]",
        "$['Body','x']..*",
        "[Body][?contains(keys(@), `a`)] | @[0]",
        "add(divide(`1`, `3`), pow(`2`, `3`))",
        "insertString(Body.d.e, 'x', `2`)",
    ];
    for _ in 0..3000 {
        let seed = seeds[rng.below(seeds.len())];
        let expr = mutate(&mut rng, seed);
        // Over the `Doc` form of the same data every answer must be the same.
        let doc = Doc::borrowed(&data);
        if let Ok(p) = JsonPath::parse(&expr) {
            let values = |r: Result<Vec<&serde_json::Value>, _>| {
                r.map(|t| t.into_iter().cloned().collect::<Vec<_>>())
            };
            let docs = |r: Result<Vec<&Doc<'_>>, _>| {
                r.map(|t| t.into_iter().map(JsonNode::to_value).collect::<Vec<_>>())
            };
            assert_eq!(
                values(p.select_tokens(&data)),
                docs(p.select_tokens(&doc)),
                "{expr}"
            );
            assert_eq!(
                p.select_token(&data).map(|t| t.cloned()),
                p.select_token(&doc).map(|t| t.map(JsonNode::to_value)),
                "{expr}"
            );
        }
        if let Ok(j) = JmesPath::parse(&expr) {
            assert_eq!(j.search(&data), j.search(&doc), "{expr}");
        }
    }
}
