//! Cross-origin resource sharing per bucket: PutBucketCors, GetBucketCors,
//! DeleteBucketCors, the preflight `OPTIONS`, and the `Access-Control-*`
//! headers of a request that comes with an `Origin`.
//!
//! A bucket's rules are kept in the index's S3 column (`state::cors`), as
//! JSON. A preflight is never signed (browsers send no credentials with
//! it) and answers only from the rules; an actual request is checked as
//! any other, and a rule matching its origin and method adds the headers
//! that let the browser hand the answer to the page.
//!
//! Matching as AWS does: an origin pattern holds at most one `*`, which
//! stands for any run of characters; methods are GET, PUT, POST, DELETE and
//! HEAD, exactly; every header of `Access-Control-Request-Headers` must
//! match an `AllowedHeader` (case-insensitive, one `*` each); the first
//! matching rule answers.

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::connection::Connection;
use crate::http::{Method, RequestHead};
use crate::index::IndexError;
use crate::meta::now_ms;

use super::request::S3Request;
use super::xml::{malformed, walk, Document, XmlError};
use super::{bucket, object, state, Reply, S3Error, Sent};

/// Longest CORS configuration document.
const CONFIGURATION_BYTES_MAX: usize = 64 * 1024;
/// Rules a bucket may have (S3's limit).
const RULES_MAX: usize = 100;
/// Methods a rule may allow.
const METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "HEAD"];

/// One `CORSRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub expose: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
}

/// A `CORSConfiguration` body: its rules, each checked.
pub fn parse(body: &[u8]) -> Result<Vec<Rule>, S3Error> {
    let mut rules = Vec::new();
    let mut rule = Rule::default();
    let parsed = walk(body, "CORSConfiguration", |closed| {
        match (closed.depth, closed.parent, closed.name) {
            (3, "CORSRule", "ID") => rule.id = Some(closed.text()?.trim().to_owned()),
            (3, "CORSRule", "AllowedOrigin") => rule.origins.push(closed.text()?.trim().to_owned()),
            (3, "CORSRule", "AllowedMethod") => rule.methods.push(closed.text()?.trim().to_owned()),
            (3, "CORSRule", "AllowedHeader") => rule.headers.push(closed.text()?.trim().to_owned()),
            (3, "CORSRule", "ExposeHeader") => rule.expose.push(closed.text()?.trim().to_owned()),
            (3, "CORSRule", "MaxAgeSeconds") => {
                let text = closed.text()?.trim();
                rule.max_age_seconds = Some(
                    text.parse()
                        .map_err(|_| malformed(format!("MaxAgeSeconds {text:?} is not a number")))?,
                );
            }
            (2, _, "CORSRule") => {
                if rules.len() == RULES_MAX {
                    return Err(XmlError::TooMany);
                }
                rules.push(std::mem::take(&mut rule));
            }
            _ => {}
        }
        Ok(())
    });
    match parsed {
        Ok(()) => {}
        Err(XmlError::TooMany) => {
            return Err(S3Error::new(
                400,
                "InvalidRequest",
                format!("A CORS configuration may have at most {RULES_MAX} rules"),
            ))
        }
        Err(XmlError::Malformed(reason)) => return Err(S3Error::malformed_xml(reason)),
    }
    if rules.is_empty() {
        return Err(S3Error::malformed_xml("no CORSRule"));
    }
    for rule in &rules {
        check(rule)?;
    }
    Ok(rules)
}

fn check(rule: &Rule) -> Result<(), S3Error> {
    // Origins, methods and exposed headers are sent back in header lines.
    let strings = rule
        .origins
        .iter()
        .chain(&rule.methods)
        .chain(&rule.headers)
        .chain(&rule.expose);
    if !strings.chain(&rule.id).all(|text| crate::http::is_header_value(text)) {
        return Err(S3Error::malformed_xml("a CORS rule holds a control character"));
    }
    if let Some(header) = rule.expose.iter().find(|header| !crate::http::is_header_name(header)) {
        return Err(S3Error::new(
            400,
            "InvalidRequest",
            format!("ExposeHeader \"{header}\" is not a header name"),
        ));
    }
    if rule.origins.is_empty() || rule.methods.is_empty() {
        return Err(S3Error::malformed_xml(
            "a CORSRule needs an AllowedOrigin and an AllowedMethod",
        ));
    }
    if let Some(method) = rule.methods.iter().find(|method| !METHODS.contains(&method.as_str())) {
        return Err(S3Error::new(
            400,
            "InvalidRequest",
            format!("Found unsupported HTTP method in CORS config. Unsupported method is {method}"),
        ));
    }
    let wildcards = |pattern: &String| pattern.matches('*').count() > 1;
    if let Some(origin) = rule.origins.iter().find(|origin| wildcards(origin)) {
        return Err(S3Error::new(
            400,
            "InvalidRequest",
            format!("AllowedOrigin \"{origin}\" can not have more than one wildcard."),
        ));
    }
    if let Some(header) = rule.headers.iter().find(|header| wildcards(header)) {
        return Err(S3Error::new(
            400,
            "InvalidRequest",
            format!("AllowedHeader \"{header}\" can not have more than one wildcard."),
        ));
    }
    Ok(())
}

/// The `GetBucketCors` document.
pub fn render(rules: &[Rule]) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root("CORSConfiguration");
    for rule in rules {
        document.open("CORSRule");
        if let Some(id) = &rule.id {
            document.element("ID", id);
        }
        for (name, values) in [
            ("AllowedHeader", &rule.headers),
            ("AllowedMethod", &rule.methods),
            ("AllowedOrigin", &rule.origins),
            ("ExposeHeader", &rule.expose),
        ] {
            for value in values {
                document.element(name, value);
            }
        }
        if let Some(seconds) = rule.max_age_seconds {
            document.value("MaxAgeSeconds", seconds);
        }
        document.close("CORSRule");
    }
    document.close("CORSConfiguration");
    document.finish()
}

/// Whether `text` matches `pattern`, whose one `*` (if any) stands for any
/// run of characters; case-insensitive when `fold`.
fn matches(pattern: &str, text: &str, fold: bool) -> bool {
    let equal = |a: &str, b: &str| if fold { a.eq_ignore_ascii_case(b) } else { a == b };
    let Some((before, after)) = pattern.split_once('*') else {
        return equal(pattern, text);
    };
    text.len() >= before.len() + after.len()
        && text.is_char_boundary(before.len())
        && text.is_char_boundary(text.len() - after.len())
        && equal(&text[..before.len()], before)
        && equal(&text[text.len() - after.len()..], after)
}

/// The first rule that lets `origin` make a `method` request sending
/// `headers` (the names of `Access-Control-Request-Headers`).
pub fn find<'a>(rules: &'a [Rule], origin: &str, method: &str, headers: &[&str]) -> Option<&'a Rule> {
    rules.iter().find(|rule| {
        rule.origins.iter().any(|pattern| matches(pattern, origin, false))
            && rule.methods.iter().any(|allowed| allowed == method)
            && headers
                .iter()
                .all(|header| rule.headers.iter().any(|pattern| matches(pattern, header, true)))
    })
}

/// The header names of an `Access-Control-Request-Headers` value.
pub fn request_headers(value: Option<&str>) -> Vec<&str> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect()
}

/// The `Access-Control-*` header lines that `rule` gives `origin`; with
/// `preflight`, also what the browser asked to send.
pub fn headers(rule: &Rule, origin: &str, preflight: Option<&[&str]>) -> String {
    let mut lines = String::new();
    let any_origin = rule.origins.iter().any(|pattern| pattern == "*");
    let allowed_origin = if any_origin { "*" } else { origin };
    lines.push_str(&format!("Access-Control-Allow-Origin: {allowed_origin}\r\n"));
    lines.push_str(&format!(
        "Access-Control-Allow-Methods: {}\r\n",
        rule.methods.join(", ")
    ));
    if let Some(requested) = preflight {
        if !requested.is_empty() {
            lines.push_str(&format!("Access-Control-Allow-Headers: {}\r\n", requested.join(", ")));
        }
        if let Some(seconds) = rule.max_age_seconds {
            lines.push_str(&format!("Access-Control-Max-Age: {seconds}\r\n"));
        }
    }
    if !rule.expose.is_empty() {
        lines.push_str(&format!(
            "Access-Control-Expose-Headers: {}\r\n",
            rule.expose.join(", ")
        ));
    }
    if !any_origin {
        // Credentials are allowed only with a named origin, as AWS does.
        lines.push_str("Access-Control-Allow-Credentials: true\r\n");
    }
    lines.push_str("Vary: Origin, Access-Control-Request-Headers, Access-Control-Request-Method\r\n");
    lines
}

/// Refusal of a preflight no rule allows.
pub fn forbidden() -> S3Error {
    S3Error::new(
        403,
        "AccessForbidden",
        "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, \
         request method / Access-Control-Request-Method or Access-Control-Request-Headers are not \
         whitelisted by the resource's CORS spec.",
    )
}

/// PutBucketCors.
pub async fn put(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    bucket::check_exists(app, &request.bucket).await?;
    let body = object::read_small_body(app, connection, head, request).await?;
    // Read again for every request with an Origin: kept small, as S3's 64 KB.
    if body.len() > CONFIGURATION_BYTES_MAX {
        return Err(S3Error::new(
            400,
            "MaxMessageLengthExceeded",
            format!("A CORS configuration may be at most {CONFIGURATION_BYTES_MAX} bytes"),
        ));
    }
    let rules = parse(&body)?;
    state::set_bucket_cors(&app.store, &request.bucket, Some(rules), now_ms()).await?;
    Reply::empty(200).write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

/// GetBucketCors.
pub async fn get(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    bucket::check_exists(app, &request.bucket).await?;
    let rules = state::bucket_cors(&app.store, &request.bucket)
        .await?
        .ok_or_else(|| S3Error::new(404, "NoSuchCORSConfiguration", "The CORS configuration does not exist"))?;
    Reply::xml(200, render(&rules)).write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

/// DeleteBucketCors.
pub async fn delete(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    bucket::check_exists(app, &request.bucket).await?;
    if state::bucket_cors(&app.store, &request.bucket).await?.is_some() {
        state::set_bucket_cors(&app.store, &request.bucket, None, now_ms()).await?;
    }
    Reply::empty(204).write(connection, head.keep_alive, false);
    Ok(Sent::status(204))
}

/// A preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`), answered from the bucket's rules.
pub async fn preflight(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let headers = &request.headers;
    let (Some(origin), Some(method)) = (headers.origin.as_deref(), headers.cors_method.as_deref()) else {
        return Err(S3Error::new(
            400,
            "BadRequest",
            "Insufficient information. Origin request header needed.",
        ));
    };
    let requested = request_headers(headers.cors_headers.as_deref());
    let rules = state::bucket_cors(&app.store, &request.bucket)
        .await?
        .unwrap_or_default();
    let rule = find(&rules, origin, method, &requested).ok_or_else(forbidden)?;
    let mut reply = Reply::empty(200);
    reply.headers.push_str(&self::headers(rule, origin, Some(&requested)));
    reply.write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

/// The `Access-Control-*` header lines for an actual request that came
/// with an `Origin`, when a rule of its bucket allows it (the method a
/// browser names in `Access-Control-Request-Method`, else the request's).
/// The rules are read off the reactor on PostgreSQL; an index that does
/// not answer fails the request (503 with Retry-After) rather than answer
/// it without the headers its bucket's rules give, which a browser would
/// take for a refusal.
pub async fn actual_request_headers(app: &App, method: Method, request: &S3Request) -> Result<String, S3Error> {
    let Some(origin) = request.headers.origin.as_deref() else {
        return Ok(String::new());
    };
    if request.bucket.is_empty() {
        return Ok(String::new());
    }
    let rules = match state::bucket_cors(&app.store, &request.bucket).await {
        Ok(Some(rules)) => rules,
        Ok(None) => return Ok(String::new()),
        Err(error @ IndexError::Unavailable(_)) => return Err(error.into()),
        // Unreadable rules allow nothing, as before they were read off the
        // reactor: the request goes on without the headers.
        Err(_) => return Ok(String::new()),
    };
    let method = match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        _ => return Ok(String::new()),
    };
    let method = request.headers.cors_method.as_deref().unwrap_or(method);
    Ok(match find(&rules, origin, method, &[]) {
        Some(rule) => headers(rule, origin, None),
        None => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> Rule {
        let strings = |values: &[&str]| values.iter().map(|value| value.to_string()).collect();
        Rule {
            origins: strings(origins),
            methods: strings(methods),
            headers: strings(headers),
            ..Rule::default()
        }
    }

    #[test]
    fn origins_match_with_one_wildcard() {
        for (pattern, origin, expected) in [
            ("*suffix", "foo.suffix", true),
            ("*suffix", "foo.suffix.get", false),
            ("start*end", "startend", true),
            ("start*end", "start12end", true),
            ("start*end", "0start12end", false),
            ("prefix*", "prefix", true),
            ("prefix*", "bla.prefix", false),
            ("*", "anything", true),
            ("https://a.example", "https://a.example", true),
            ("https://a.example", "https://A.example", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(matches(pattern, origin, false), expected, "{pattern} {origin}");
        }
    }

    #[test]
    fn the_first_rule_allowing_origin_method_and_headers_answers() {
        let rules = [
            rule(&["*.put"], &["PUT"], &[]),
            rule(&["*"], &["GET"], &["x-amz-*", "content-type"]),
        ];
        assert_eq!(find(&rules, "a.put", "PUT", &[]), Some(&rules[0]));
        assert_eq!(find(&rules, "a.put", "DELETE", &[]), None);
        assert_eq!(
            find(&rules, "x", "GET", &["X-Amz-Date", "Content-Type"]),
            Some(&rules[1])
        );
        assert_eq!(find(&rules, "x", "GET", &["authorization"]), None);
    }

    #[test]
    fn configurations_parse_render_and_are_checked() {
        let body = b"<CORSConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><CORSRule>\
            <AllowedOrigin>*.get</AllowedOrigin><AllowedMethod>GET</AllowedMethod>\
            <AllowedHeader>*</AllowedHeader><MaxAgeSeconds>30</MaxAgeSeconds></CORSRule></CORSConfiguration>";
        let rules = parse(body).unwrap();
        assert_eq!(rules[0].origins, ["*.get"]);
        assert_eq!(rules[0].max_age_seconds, Some(30));
        assert_eq!(parse(&render(&rules)).unwrap(), rules);
        for bad in [
            &b"<CORSConfiguration></CORSConfiguration>"[..],
            b"<CORSConfiguration><CORSRule><AllowedOrigin>a</AllowedOrigin></CORSRule></CORSConfiguration>",
            b"<CORSConfiguration><CORSRule><AllowedOrigin>a</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod>\
              </CORSRule></CORSConfiguration>",
            b"<CORSConfiguration><CORSRule><AllowedOrigin>*a*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>\
              </CORSRule></CORSConfiguration>",
        ] {
            assert_eq!(parse(bad).unwrap_err().status, 400);
        }
    }

    #[test]
    fn a_named_origin_is_echoed_a_wildcard_is_not() {
        let named = headers(
            &rule(&["https://a.example"], &["GET", "PUT"], &[]),
            "https://a.example",
            None,
        );
        assert!(named.contains("Access-Control-Allow-Origin: https://a.example\r\n"));
        assert!(named.contains("Access-Control-Allow-Methods: GET, PUT\r\n"));
        let any = headers(&rule(&["*"], &["GET"], &[]), "https://b.example", Some(&["x-amz-date"]));
        assert!(any.contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(any.contains("Access-Control-Allow-Headers: x-amz-date\r\n"));
        assert!(!any.contains("Credentials"));
    }
}
