//! The box's HTML port forms (`/conf/add_port`, `/conf/delete_port`), read the way live
//! clients read them: every `<input name value>`, and for a `<select>` its selected option
//! (or else its first). Used only as the fallback write path (`[proxysmart] port_write`);
//! what a form save did is always read back from `list_ports_json`.

use super::error::ProxysmartError;

/// What a `/conf/*` request came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A page (the form).
    Page(String),
    /// A redirect elsewhere than the login page: what a save answers, taken or not.
    Redirect(String),
    /// The web panel wants its login first.
    LoginWall,
}

/// Classifies a `/conf/*` answer.
pub fn classify(status: u16, location: &str, body: String) -> Answer {
    if (300..400).contains(&status) {
        if location.contains("/modem/login") {
            return Answer::LoginWall;
        }
        return Answer::Redirect(location.to_string());
    }
    let head: String = body.chars().take(600).collect();
    if head.contains("/modem/login") && !body.contains("name=\"portID\"") {
        return Answer::LoginWall;
    }
    Answer::Page(body)
}

/// The form's fields in page order: inputs with their values, selects with the selected
/// (or first) option's value. A page without a `portID` field is not a port form.
pub fn inputs(html: &str) -> Result<Vec<(String, String)>, ProxysmartError> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut select: Option<(String, Option<String>, bool)> = None;
    for tag in html.split('<').skip(1) {
        let lower = tag.get(..7).unwrap_or(tag).to_ascii_lowercase();
        if lower.starts_with("input") {
            let kind = attr(tag, "type").unwrap_or_default().to_ascii_lowercase();
            if let (Some(name), false) = (attr(tag, "name"), kind == "submit") {
                fields.push((name, attr(tag, "value").unwrap_or_default()));
            }
        } else if lower.starts_with("select") {
            select = attr(tag, "name").map(|n| (n, None, false));
        } else if lower.starts_with("option") {
            if let Some((_, first, chosen)) = select.as_mut() {
                let value = attr(tag, "value").unwrap_or_default();
                if contains_word(tag, "selected") && !*chosen {
                    *first = Some(value);
                    *chosen = true;
                } else if first.is_none() {
                    *first = Some(value);
                }
            }
        } else if lower.starts_with("/select") {
            if let Some((name, value, _)) = select.take() {
                fields.push((name, value.unwrap_or_default()));
            }
        }
    }
    if !fields.iter().any(|(n, _)| n == "portID") {
        return Err(ProxysmartError::malformed(
            "the port form has no portID field (a login page or another page?)",
        ));
    }
    Ok(fields)
}

/// Sets `name` to `value`, adding the field when the form lacks it.
pub fn set(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    match fields.iter_mut().find(|(n, _)| n == name) {
        Some(field) => field.1 = value.to_string(),
        None => fields.push((name.to_string(), value.to_string())),
    }
}

/// The value of field `name`, if the form has it.
pub fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A port id safe to put in a URL path (the box's ids are letters and digits).
pub fn path_segment(port_id: &str) -> Result<&str, ProxysmartError> {
    let ok = !port_id.is_empty()
        && port_id.len() <= 64
        && port_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(port_id)
    } else {
        Err(ProxysmartError::malformed("a port id that is not a token"))
    }
}

/// `name="value"` or `name='value'` or `name=value` in a tag, entities decoded.
fn attr(tag: &str, name: &str) -> Option<String> {
    let end = tag.find('>').unwrap_or(tag.len());
    let tag = &tag[..end];
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(name) {
        let at = from + found;
        from = at + name.len();
        let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = tag[at + name.len()..].trim_start();
        let Some(rest) = rest.strip_prefix('=').filter(|_| before_ok) else {
            continue;
        };
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or_default(),
            _ => rest
                .split(|c: char| c.is_ascii_whitespace() || c == '/')
                .next()
                .unwrap_or_default(),
        };
        return Some(decode_entities(value));
    }
    None
}

fn contains_word(tag: &str, word: &str) -> bool {
    let end = tag.find('>').unwrap_or(tag.len());
    tag[..end]
        .to_ascii_lowercase()
        .split(|c: char| c.is_ascii_whitespace() || c == '=' || c == '/')
        .any(|w| w == word)
}

fn decode_entities(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &str = r#"<!DOCTYPE html><html><body><form method="post" action="">
      <input type="hidden" name="IMEI" value="356000000000001">
      <input class=crud type="text" name="portID" value="portQcSp2e0Y">
      <input class=crud name=portName value="">
      <input type="text" name="proxy_password" value="a&amp;b&quot;c">
      <select name="QUOTA_TYPE"><option value="daily">daily</option><option value="monthly" selected>monthly</option></select>
      <SELECT name="OS"><option value="">default</option><option value="win">Windows</option></SELECT>
      <input type="submit" value="Save">
    </form></body></html>"#;

    #[test]
    fn inputs_and_selected_options_are_read() {
        let fields = inputs(FORM).unwrap();
        assert_eq!(get(&fields, "IMEI"), Some("356000000000001"));
        assert_eq!(get(&fields, "portID"), Some("portQcSp2e0Y"));
        assert_eq!(get(&fields, "portName"), Some(""));
        assert_eq!(get(&fields, "proxy_password"), Some("a&b\"c"));
        assert_eq!(get(&fields, "QUOTA_TYPE"), Some("monthly"));
        assert_eq!(
            get(&fields, "OS"),
            Some(""),
            "no selected option: the first"
        );
        assert!(fields.iter().all(|(n, _)| n != "Save" && !n.is_empty()));
        let mut fields = fields;
        set(&mut fields, "portName", "farmhand-x");
        set(&mut fields, "bw_quota", "5");
        assert_eq!(get(&fields, "portName"), Some("farmhand-x"));
        assert_eq!(get(&fields, "bw_quota"), Some("5"));
    }

    #[test]
    fn a_page_without_a_port_form_is_refused() {
        let login = r#"<form action="/modem/login"><input name="username"></form>"#;
        assert!(inputs(login).is_err());
        assert_eq!(classify(200, "", login.to_string()), Answer::LoginWall);
        assert_eq!(
            classify(302, "/modem/login?next=/conf", String::new()),
            Answer::LoginWall
        );
        assert_eq!(
            classify(302, "/conf", String::new()),
            Answer::Redirect("/conf".into())
        );
        assert_eq!(
            classify(200, "", FORM.to_string()),
            Answer::Page(FORM.to_string())
        );
    }

    #[test]
    fn only_token_port_ids_reach_a_path() {
        assert!(path_segment("portQcSp2e0Y").is_ok());
        for bad in ["", "../x", "a/b", "a b", "x?y"] {
            assert!(path_segment(bad).is_err(), "{bad}");
        }
    }
}
