//! Decoding of AMQP 1.0 primitive values (OASIS AMQP 1.0, part 1, "Types"), the form in which
//! Event Hubs hands application properties of AMQP/HTTPS-sent events to Kafka consumers.

use chrono::{DateTime, SecondsFormat};
use serde_json::Value;

fn take<const N: usize>(data: &[u8]) -> Option<[u8; N]> {
    if data.len() == N {
        data.try_into().ok()
    } else {
        None
    }
}

fn sized(data: &[u8], wide: bool) -> Option<&[u8]> {
    let (len, rest) = if wide {
        let (head, rest) = data.split_at_checked(4)?;
        (
            usize::try_from(u32::from_be_bytes(head.try_into().ok()?)).ok()?,
            rest,
        )
    } else {
        let (&len, rest) = data.split_first()?;
        (usize::from(len), rest)
    };
    (rest.len() == len).then_some(rest)
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
}

/// Decodes one AMQP-encoded primitive value that spans all of `data`, as JSON. `None` when
/// `data` is not exactly one such value (or a type this decoder does not map: lists, maps,
/// arrays, described types, decimals).
pub(crate) fn decode(data: &[u8]) -> Option<Value> {
    let (&code, rest) = data.split_first()?;
    Some(match code {
        0x40 if rest.is_empty() => Value::Null,
        0x41 if rest.is_empty() => Value::Bool(true),
        0x42 if rest.is_empty() => Value::Bool(false),
        0x56 => match take::<1>(rest)? {
            [0] => Value::Bool(false),
            [1] => Value::Bool(true),
            _ => return None,
        },
        0x43 | 0x44 if rest.is_empty() => Value::from(0u64),
        0x50 | 0x52 | 0x53 => Value::from(take::<1>(rest)?[0]),
        0x51 | 0x54 | 0x55 => Value::from(i8::from_be_bytes(take::<1>(rest)?)),
        0x60 => Value::from(u16::from_be_bytes(take(rest)?)),
        0x61 => Value::from(i16::from_be_bytes(take(rest)?)),
        0x70 => Value::from(u32::from_be_bytes(take(rest)?)),
        0x71 => Value::from(i32::from_be_bytes(take(rest)?)),
        0x80 => Value::from(u64::from_be_bytes(take(rest)?)),
        0x81 => Value::from(i64::from_be_bytes(take(rest)?)),
        0x72 => float(f64::from(f32::from_be_bytes(take(rest)?))),
        0x82 => float(f64::from_be_bytes(take(rest)?)),
        0x73 => Value::String(char::from_u32(u32::from_be_bytes(take(rest)?))?.to_string()),
        0x83 => {
            let ms = i64::from_be_bytes(take(rest)?);
            Value::String(
                DateTime::from_timestamp_millis(ms)?.to_rfc3339_opts(SecondsFormat::Millis, true),
            )
        }
        0x98 => {
            let b: [u8; 16] = take(rest)?;
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Value::String(format!(
                "{}-{}-{}-{}-{}",
                hex.get(0..8)?,
                hex.get(8..12)?,
                hex.get(12..16)?,
                hex.get(16..20)?,
                hex.get(20..32)?
            ))
        }
        // str8-utf8 / str32-utf8, sym8 / sym32 (ASCII), vbin8 / vbin32 (kept only when text).
        0xa1 | 0xa3 | 0xa0 => {
            Value::String(std::str::from_utf8(sized(rest, false)?).ok()?.to_owned())
        }
        0xb1 | 0xb3 | 0xb0 => {
            Value::String(std::str::from_utf8(sized(rest, true)?).ok()?.to_owned())
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_the_primitive_types_event_hubs_sends() {
        assert_eq!(decode(b"\xa1\x05hello"), Some(json!("hello")));
        assert_eq!(decode(b"\xb1\x00\x00\x00\x02hi"), Some(json!("hi")));
        assert_eq!(decode(b"\xa3\x03sym"), Some(json!("sym")));
        assert_eq!(decode(&[0x71, 0, 0, 0x04, 0xd2]), Some(json!(1234)));
        assert_eq!(decode(&[0x54, 0xff]), Some(json!(-1)));
        assert_eq!(decode(&[0x55, 0x07]), Some(json!(7)));
        let mut long = vec![0x81];
        long.extend_from_slice(&(-5_555_555_555i64).to_be_bytes());
        assert_eq!(decode(&long), Some(json!(-5_555_555_555i64)));
        assert_eq!(decode(&[0x43]), Some(json!(0)));
        assert_eq!(decode(&[0x41]), Some(json!(true)));
        assert_eq!(decode(&[0x56, 0]), Some(json!(false)));
        assert_eq!(decode(&[0x40]), Some(Value::Null));
        assert_eq!(
            decode(&[0x82, 0x3f, 0xf2, 0, 0, 0, 0, 0, 0]),
            Some(json!(1.125))
        );
        assert_eq!(decode(&[0x72, 0x3f, 0x90, 0, 0]), Some(json!(1.125)));
        // 2018-10-12T21:50:30.200Z = 1539381030200 ms
        let ts = 1_539_381_030_200i64.to_be_bytes();
        let mut t = vec![0x83];
        t.extend_from_slice(&ts);
        assert_eq!(decode(&t), Some(json!("2018-10-12T21:50:30.200Z")));
        let mut u = vec![0x98];
        u.extend_from_slice(&[0x12; 16]);
        assert_eq!(
            decode(&u),
            Some(json!("12121212-1212-1212-1212-121212121212"))
        );
    }

    #[test]
    fn rejects_anything_that_is_not_exactly_one_value() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\xa1\x09short"), None); // length beyond the data
        assert_eq!(decode(b"\xa1\x02hello"), None); // trailing bytes
        assert_eq!(decode(&[0x71, 0, 0]), None);
        assert_eq!(decode(&[0x41, 0]), None);
        assert_eq!(decode(&[0x56, 2]), None);
        assert_eq!(decode(b"\xa1\x02\xff\xfe"), None); // not UTF-8
        assert_eq!(decode(&[0xc1, 0x01, 0x00]), None); // map8: not a primitive we map
        assert_eq!(decode(b"plain text"), None);
    }
}
