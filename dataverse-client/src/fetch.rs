//! FetchXML paging: reading the `@Microsoft.Dynamics.CRM.fetchxmlpagingcookie` annotation and
//! writing the next page's `<fetch page=".." paging-cookie="..">` root element.
//!
//! Dataverse answers a FetchXML query that has more rows than the page size (the `count`
//! attribute, default 5,000) with `@Microsoft.Dynamics.CRM.morerecords: true` and, for most
//! queries, a paging cookie annotation of the form
//! `<cookie pagenumber="2" pagingcookie="%253ccookie%2520page..." istracking="False" />`. The
//! `pagingcookie` attribute is URL-encoded twice; decoded, it becomes the `paging-cookie`
//! attribute of the next request, and `pagenumber` its `page` attribute. Queries for which
//! Dataverse returns no cookie are paged the simple way (`page` + 1).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::{Error, Result};

/// The annotation holding the paging cookie.
pub(crate) const PAGING_COOKIE_ANNOTATION: &str = "Microsoft.Dynamics.CRM.fetchxmlpagingcookie";
/// The annotation saying whether more rows follow.
pub(crate) const MORE_RECORDS_ANNOTATION: &str = "Microsoft.Dynamics.CRM.morerecords";

const WHAT: &str = "FetchXML query";

/// The `odata.include-annotations` preference a FetchXML query needs: the caller's choice plus
/// the two paging annotations (unless the caller already asks for all of them).
pub(crate) fn annotations_with_paging(current: Option<&str>) -> String {
    let paging = format!("{PAGING_COOKIE_ANNOTATION},{MORE_RECORDS_ANNOTATION}");
    match current.map(str::trim).filter(|s| !s.is_empty()) {
        None => paging,
        Some(cur) => {
            let covers_all = cur.split(',').any(|a| {
                let a = a.trim();
                a == "*" || a == "Microsoft.Dynamics.CRM.*"
            });
            if covers_all {
                cur.to_owned()
            } else {
                format!("{cur},{paging}")
            }
        }
    }
}

/// The parts of a paging cookie annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PagingCookie {
    /// The page to ask for next (`pagenumber`).
    pub(crate) page_number: u32,
    /// The decoded cookie for the `paging-cookie` attribute (`None` when Dataverse sent an empty one).
    pub(crate) cookie: Option<String>,
}

/// Parses the `@Microsoft.Dynamics.CRM.fetchxmlpagingcookie` value.
pub(crate) fn parse_paging_cookie(annotation: &str) -> Result<PagingCookie> {
    let bad = |reason: &str| {
        Error::unexpected(
            "GET (FetchXML page)",
            format!("malformed paging cookie annotation: {reason}"),
        )
    };
    let mut reader = Reader::from_str(annotation);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                if e.name().as_ref() != b"cookie" {
                    return Err(bad("root element is not <cookie>"));
                }
                let mut page_number = None;
                let mut cookie = None;
                for (name, value) in attributes(&e).map_err(|r| bad(&r))? {
                    match name.as_str() {
                        "pagenumber" => {
                            page_number = Some(
                                value
                                    .trim()
                                    .parse::<u32>()
                                    .map_err(|_| bad("pagenumber is not a number"))?,
                            );
                        }
                        "pagingcookie" => {
                            let once = percent_decode_str(&value)
                                .decode_utf8()
                                .map_err(|_| bad("pagingcookie is not UTF-8"))?;
                            let twice = percent_decode_str(&once)
                                .decode_utf8()
                                .map_err(|_| bad("pagingcookie is not UTF-8"))?;
                            if !twice.is_empty() {
                                cookie = Some(twice.into_owned());
                            }
                        }
                        _ => {}
                    }
                }
                let page_number = page_number.ok_or_else(|| bad("no pagenumber attribute"))?;
                return Ok(PagingCookie {
                    page_number,
                    cookie,
                });
            }
            Ok(Event::Eof) => return Err(bad("no <cookie> element")),
            Ok(Event::Decl(_) | Event::Comment(_) | Event::Text(_) | Event::PI(_)) => {}
            Ok(_) => return Err(bad("unexpected content before <cookie>")),
            Err(e) => return Err(bad(&e.to_string())),
        }
    }
}

/// The root `<fetch>` element of a query: its attributes and where its start tag is.
struct FetchRoot {
    attrs: Vec<(String, String)>,
    tag_start: usize,
    tag_end: usize,
    empty: bool,
}

fn find_root(xml: &str) -> Result<FetchRoot> {
    let mut reader = Reader::from_str(xml);
    loop {
        let before = to_usize(reader.buffer_position())?;
        match reader.read_event() {
            Ok(ev @ (Event::Start(_) | Event::Empty(_))) => {
                let empty = matches!(ev, Event::Empty(_));
                let (Event::Start(e) | Event::Empty(e)) = ev else {
                    return Err(Error::invalid_input(WHAT, "unreadable root element"));
                };
                if e.name().as_ref() != b"fetch" {
                    return Err(Error::invalid_input(
                        WHAT,
                        "the root element must be <fetch>",
                    ));
                }
                let attrs = attributes(&e).map_err(|r| Error::invalid_input(WHAT, r))?;
                let tag_end = to_usize(reader.buffer_position())?;
                // The reader reports the position after any text it skipped; find the `<`.
                let tag_start = xml
                    .get(before..tag_end)
                    .and_then(|s| s.find('<'))
                    .map(|i| before + i)
                    .ok_or_else(|| Error::invalid_input(WHAT, "unreadable root element"))?;
                return Ok(FetchRoot {
                    attrs,
                    tag_start,
                    tag_end,
                    empty,
                });
            }
            Ok(Event::Eof) => return Err(Error::invalid_input(WHAT, "no <fetch> element")),
            Ok(Event::Decl(_) | Event::Comment(_) | Event::Text(_) | Event::PI(_)) => {}
            Ok(_) => {
                return Err(Error::invalid_input(
                    WHAT,
                    "unexpected content before <fetch>",
                ))
            }
            Err(e) => {
                return Err(Error::invalid_input(
                    WHAT,
                    format!("not well-formed XML: {e}"),
                ))
            }
        }
    }
}

fn to_usize(pos: u64) -> Result<usize> {
    usize::try_from(pos).map_err(|_| Error::invalid_input(WHAT, "query too large"))
}

fn attributes(e: &BytesStart<'_>) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|e| format!("bad attribute: {e}"))?;
        let name = String::from_utf8(attr.key.as_ref().to_vec())
            .map_err(|_| "attribute name is not UTF-8".to_owned())?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| format!("bad value of attribute `{name}`: {e}"))?
            .into_owned();
        out.push((name, value));
    }
    Ok(out)
}

/// Whether the query can be paged: Dataverse rejects `top` together with `page`.
pub(crate) fn is_pageable(xml: &str) -> Result<bool> {
    Ok(!find_root(xml)?.attrs.iter().any(|(n, _)| n == "top"))
}

/// The FetchXML of the page after the one `xml` asked for: `page` set to the cookie's page
/// number (or the current page + 1 without a cookie), `paging-cookie` set to the decoded cookie
/// (or removed without one). The rest of the document is kept byte for byte.
pub(crate) fn next_page(xml: &str, cookie: Option<&PagingCookie>) -> Result<String> {
    let root = find_root(xml)?;
    let current = root
        .attrs
        .iter()
        .find(|(n, _)| n == "page")
        .map(|(_, v)| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| Error::invalid_input(WHAT, "the page attribute is not a number"))
        })
        .transpose()?
        .unwrap_or(1);
    let next = match cookie {
        Some(c) => c.page_number,
        None => current
            .checked_add(1)
            .ok_or_else(|| Error::invalid_input(WHAT, "page number overflow"))?,
    };
    if next <= current {
        return Err(Error::unexpected(
            "GET (FetchXML page)",
            format!("paging cookie asks for page {next} after page {current}"),
        ));
    }
    let mut tag = String::from("<fetch");
    let mut push = |name: &str, value: &str| {
        tag.push(' ');
        tag.push_str(name);
        tag.push_str("=\"");
        tag.push_str(&escape(value));
        tag.push('"');
    };
    for (name, value) in &root.attrs {
        if name != "page" && name != "paging-cookie" {
            push(name, value);
        }
    }
    let page = next.to_string();
    push("page", &page);
    if let Some(c) = cookie.and_then(|c| c.cookie.as_deref()) {
        push("paging-cookie", c);
    }
    tag.push_str(if root.empty { "/>" } else { ">" });
    let head = xml.get(..root.tag_start).unwrap_or_default();
    let tail = xml.get(root.tag_end..).unwrap_or_default();
    Ok([Cow::Borrowed(head), Cow::Owned(tag), Cow::Borrowed(tail)].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of the annotation as the Learn page "Page results using FetchXml" shows it.
    const ANNOTATION: &str = "<cookie pagenumber=\"2\" pagingcookie=\"%253ccookie%2520page%253d%25221%2522%253e%253caccountid%2520last%253d%2522%257bAAA%257d%2522%2520first%253d%2522%257bBBB%257d%2522%2520%252f%253e%253c%252fcookie%253e\" istracking=\"False\" />";

    #[test]
    fn cookie_is_decoded_twice() {
        let c = parse_paging_cookie(ANNOTATION).unwrap();
        assert_eq!(c.page_number, 2);
        assert_eq!(
            c.cookie.as_deref(),
            Some("<cookie page=\"1\"><accountid last=\"{AAA}\" first=\"{BBB}\" /></cookie>")
        );
    }

    #[test]
    fn next_page_sets_page_and_escaped_cookie_and_keeps_the_rest() {
        let xml = "<?xml version=\"1.0\"?>\n<fetch count='3' mapping=\"logical\">\n  <entity name='account'><attribute name='name'/></entity>\n</fetch>";
        let c = parse_paging_cookie(ANNOTATION).unwrap();
        let next = next_page(xml, Some(&c)).unwrap();
        assert_eq!(
            next,
            "<?xml version=\"1.0\"?>\n<fetch count=\"3\" mapping=\"logical\" page=\"2\" paging-cookie=\"&lt;cookie page=&quot;1&quot;&gt;&lt;accountid last=&quot;{AAA}&quot; first=&quot;{BBB}&quot; /&gt;&lt;/cookie&gt;\">\n  <entity name='account'><attribute name='name'/></entity>\n</fetch>"
        );
        // The written cookie reads back as the decoded one.
        let root = find_root(&next).unwrap();
        let cookie = root
            .attrs
            .iter()
            .find(|(n, _)| n == "paging-cookie")
            .unwrap();
        assert_eq!(Some(cookie.1.as_str()), c.cookie.as_deref());
        // The page after that replaces both attributes instead of adding them again.
        let third = next_page(
            &next,
            Some(&PagingCookie {
                page_number: 3,
                cookie: Some("<cookie page=\"2\"/>".into()),
            }),
        )
        .unwrap();
        assert_eq!(third.matches("page=").count(), 2, "{third}"); // page= and the cookie's page=
        assert!(third.contains(" page=\"3\" paging-cookie=\"&lt;cookie page=&quot;2&quot;/&gt;\""));
    }

    #[test]
    fn without_a_cookie_paging_is_simple() {
        let next = next_page(
            "<fetch page='4' count='10'><entity name='a'/></fetch>",
            None,
        )
        .unwrap();
        assert_eq!(
            next,
            "<fetch count=\"10\" page=\"5\"><entity name='a'/></fetch>"
        );
    }

    #[test]
    fn a_cookie_that_does_not_advance_is_refused() {
        let c = PagingCookie {
            page_number: 1,
            cookie: None,
        };
        assert!(matches!(
            next_page("<fetch><entity name='a'/></fetch>", Some(&c)),
            Err(Error::UnexpectedResponse { .. })
        ));
    }

    #[test]
    fn bad_queries_and_cookies_are_typed_errors() {
        for xml in [
            "",
            "<query/>",
            "<fetch page='x'/>",
            "<fetch count='1'",
            "text only",
        ] {
            assert!(
                matches!(next_page(xml, None), Err(Error::InvalidInput { .. })),
                "{xml}"
            );
        }
        for ann in [
            "",
            "<other pagenumber='2'/>",
            "<cookie/>",
            "<cookie pagenumber='two'/>",
        ] {
            assert!(
                matches!(
                    parse_paging_cookie(ann),
                    Err(Error::UnexpectedResponse { .. })
                ),
                "{ann}"
            );
        }
    }

    #[test]
    fn top_queries_are_not_paged() {
        assert!(!is_pageable("<fetch top='5'><entity name='a'/></fetch>").unwrap());
        assert!(is_pageable("<fetch count='5'><entity name='a'/></fetch>").unwrap());
    }

    #[test]
    fn annotations_preference_adds_the_paging_annotations_once() {
        assert_eq!(
            annotations_with_paging(None),
            "Microsoft.Dynamics.CRM.fetchxmlpagingcookie,Microsoft.Dynamics.CRM.morerecords"
        );
        assert_eq!(annotations_with_paging(Some("*")), "*");
        assert_eq!(
            annotations_with_paging(Some("OData.Community.Display.V1.FormattedValue")),
            "OData.Community.Display.V1.FormattedValue,Microsoft.Dynamics.CRM.fetchxmlpagingcookie,Microsoft.Dynamics.CRM.morerecords"
        );
    }
}
