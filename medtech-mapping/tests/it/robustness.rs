//! No panic on any template or message: mutate the golden inputs with a small deterministic
//! generator and feed them to every parser and to normalization. (A `cargo fuzz` target can
//! reuse the golden folders as its seed corpus.)

use carebridge_medtech_mapping::{
    envelope, DeviceMapping, FhirMapping, JmesPath, JsonPath, Normalizer,
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
                    let _ = n.normalize_explained(&ev, 0);
                }
            }
            let _ = FhirMapping::from_json(&m);
            let msg = mutate(&mut rng, &message_text);
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&msg) {
                let _ = good.normalize(&v, 0);
                let _ = good.normalize(&envelope(v), 0);
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
        if let Ok(p) = JsonPath::parse(&expr) {
            let _ = p.select_tokens(&data);
            let _ = p.select_token(&data);
        }
        if let Ok(j) = JmesPath::parse(&expr) {
            let _ = j.search(&data);
        }
    }
}
