//! Keeping passwords out of messages.

/// `url` with any password replaced by `***`, fit to show in errors and logs.
///
/// Handles URLs (`redis://:secret@host`, `postgres://user:secret@host/db`,
/// `?password=secret`) and PostgreSQL key-value strings (`host=h password=secret`).
///
/// ```
/// assert_eq!(qupid::redact_url("redis://:s3cret@host:6379/0"), "redis://:***@host:6379/0");
/// assert_eq!(qupid::redact_url("host=h password=s3cret"), "host=h password=***");
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = match url.find("://") {
        Some(i) => redact_userinfo(url, i + 3),
        None => url.to_owned(),
    };
    for key in ["password=", "PASSWORD="] {
        let mut from = 0;
        while let Some(pos) = out[from..].find(key) {
            let start = from + pos + key.len();
            let boundary = out[..from + pos]
                .chars()
                .next_back()
                .is_none_or(|c| matches!(c, '?' | '&' | ' ' | '\t'));
            let end = out[start..]
                .find(['&', ' ', '\t', '#'])
                .map_or(out.len(), |e| start + e);
            if boundary && end > start {
                out.replace_range(start..end, "***");
                from = start + 3;
            } else {
                from = start;
            }
        }
    }
    out
}

fn redact_userinfo(url: &str, scheme_end: usize) -> String {
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = rest[..at].find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end],
        &rest[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url as redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://127.0.0.1:5432/test"),
            "postgres://127.0.0.1:5432/test"
        );
        assert_eq!(
            redact("postgres://u:s3cret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact("redis://:s3cret@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact("rediss://user:p@ss@h/"), "rediss://user:***@h/");
        assert_eq!(redact("redis://user@h/"), "redis://user@h/");
        assert_eq!(
            redact("postgres://h/db?password=s3cret&x=1"),
            "postgres://h/db?password=***&x=1"
        );
        assert_eq!(
            redact("host=h password=s3cret dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(redact("not a url"), "not a url");
    }
}
