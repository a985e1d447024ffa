//! The console's HTML: one layout (header, navigation, sign-out) around each page's empty
//! tables, which `console.js` fills from the live stream. No inline script or style (the
//! CSP forbids both); the only text from outside is the key's name, escaped.

use super::session::Session;
use crate::store::Role;
use axum::response::Html;

/// A console page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// Agents and modems.
    Fleet,
    /// Allocations by state.
    Allocations,
    /// The plane's own health (admins).
    Health,
    /// A seller's own boxes (seller keys).
    Boxes,
}

impl Page {
    fn name(self) -> &'static str {
        match self {
            Page::Fleet => "fleet",
            Page::Allocations => "allocations",
            Page::Health => "health",
            Page::Boxes => "boxes",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Page::Fleet => "Fleet",
            Page::Allocations => "Allocations",
            Page::Health => "Health",
            Page::Boxes => "My boxes",
        }
    }

    /// Whether a session of `role` may open it (the server refuses the others).
    pub fn allowed(self, role: Role) -> bool {
        match self {
            Page::Fleet | Page::Allocations => role != Role::Seller,
            Page::Health => role == Role::Admin,
            Page::Boxes => role == Role::Seller,
        }
    }

    /// The page a session of `role` starts on.
    pub fn home(role: Role) -> Page {
        match role {
            Role::Seller => Page::Boxes,
            Role::Admin | Role::Marketplace => Page::Fleet,
        }
    }

    /// Its path.
    pub fn path(self) -> String {
        format!("/console/{}", self.name())
    }

    fn body(self, admin: bool) -> String {
        match self {
            Page::Fleet => {
                let agents = if admin {
                    table(
                        "agents",
                        "Agents",
                        &[
                            "Agent",
                            "Label",
                            "Host",
                            "Version",
                            "Protocol",
                            "State",
                            "Connected since",
                            "Last seen",
                            "Node",
                            "Modems online",
                            "Action"
                        ],
                        "No agent has enrolled yet: issue an enrollment token and run farmhand-agent enroll on the seller's box.",
                    )
                } else {
                    String::new()
                };
                let charts = if admin {
                    "<section aria-labelledby=\"trend-title\"><h2 id=\"trend-title\">The last \
                     day, a point a minute</h2><div id=\"charts\" class=\"charts\"></div></section>"
                } else {
                    ""
                };
                format!(
                    "{charts}<label class=\"search\">Search <input id=\"filter\" type=\"search\" \
                     placeholder=\"IMEI, carrier, country, agent\" autocomplete=\"off\"></label>{agents}{}{}",
                    table(
                        "pools",
                        "By country and carrier",
                        &["Country", "Carrier", "Online", "Modems", "Sold"],
                        "No modem is reported yet.",
                    ),
                    table(
                        "modems",
                        "Modems",
                        &["IMEI", "Agent", "Carrier", "Country", "IP", "State", "Signal", "Sold"],
                        "No modem is reported: check that the agents are connected and can read ProxySmart.",
                    )
                )
            }
            Page::Allocations => format!(
                "<section aria-labelledby=\"counts-title\"><h2 id=\"counts-title\">By state</h2>\
                 <ul id=\"counts\" class=\"counts\"></ul></section>{}",
                table(
                    "allocations",
                    "Allocations",
                    &[
                        "Allocation",
                        "Order",
                        "State",
                        "Modem",
                        "Endpoint",
                        "Created",
                        "Expires",
                        "Moves",
                        "Used",
                        "Probes"
                    ],
                    "Nothing is sold yet: POST /v1/allocations with a marketplace key.",
                )
            ),
            Page::Boxes => format!(
                "{}{}{}{}",
                table(
                    "boxes",
                    "Boxes",
                    &[
                        "Box",
                        "Host",
                        "Version",
                        "State",
                        "Connected since",
                        "Last seen",
                        "Health",
                        "Keeps",
                        "Score (24 h)"
                    ],
                    "No box is enrolled under this seller's label yet: ask the operator for an \
                     enrollment token and run farmhand-agent enroll on the box.",
                ),
                table(
                    "modems",
                    "Modems",
                    &["IMEI", "Box", "Carrier", "Country", "IP", "State", "Signal", "Sold"],
                    "No modem is reported: check that the agent runs and can read ProxySmart.",
                ),
                table(
                    "ports",
                    "Sold now",
                    &["Allocation", "Modem", "Box", "State", "Since", "Expires"],
                    "Nothing is sold on these boxes now.",
                ),
                table(
                    "usage",
                    "Traffic per modem and day (UTC), the last 7 days",
                    &["Day", "Modem", "Box", "To buyers", "From buyers"],
                    "No traffic in the last 7 days.",
                )
            ) + "<p><a href=\"/console/usage.csv\" download>Download the last 31 days as CSV</a> \
                 (what payouts are computed from; <code>GET /v1/seller/usage</code> with a seller \
                 key gives any span).</p>",
            Page::Health => format!(
                "<section aria-labelledby=\"health-title\"><h2 id=\"health-title\">\
                 The plane</h2><dl id=\"health\"></dl></section>{}{}",
                table(
                    "webhooks",
                    "Webhook endpoints",
                    &["Endpoint", "URL", "Waiting", "Given up", "Last error"],
                    "No webhook endpoint: POST /v1/webhooks registers one.",
                ),
                table(
                    "commands",
                    "Commands to agents",
                    &["Command", "In flight", "Answered", "Mean round trip"],
                    "No command sent since the plane started.",
                )
            ),
        }
    }
}

fn table(id: &str, title: &str, columns: &[&str], empty: &str) -> String {
    let heads: String = columns
        .iter()
        .map(|c| format!("<th scope=\"col\">{c}</th>"))
        .collect();
    format!(
        "<section aria-labelledby=\"{id}-title\"><h2 id=\"{id}-title\">{title}</h2>\
         <div class=\"scroll\"><table id=\"{id}\"><thead><tr>{heads}</tr></thead><tbody></tbody>\
         </table></div><p class=\"empty\" id=\"{id}-empty\" hidden>{empty}</p></section>"
    )
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn layout(title: &str, page: &str, role: &str, header: &str, main: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Farmhand console</title>\
         <link rel=\"icon\" href=\"/console/assets/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script src=\"/console/assets/console.js\" defer></script></head>\
         <body data-page=\"{page}\" data-role=\"{role}\">{header}<main id=\"main\">{main}</main></body></html>"
    ))
}

/// `html` with the session's CSRF token on its body, for the page's actions.
fn signed(html: Html<String>, session: &Session) -> Html<String> {
    let token = escape(&session.csrf);
    Html(
        html.0
            .replacen("<body ", &format!("<body data-csrf=\"{token}\" "), 1),
    )
}

/// A signed-in page.
pub fn page(page: Page, session: &Session) -> Html<String> {
    let admin = session.caller.role == Role::Admin;
    let main = format!(
        "<h1>{}</h1><p id=\"status\" role=\"status\" aria-live=\"polite\">Connecting…</p>{}",
        page.title(),
        page.body(admin)
    );
    let role = session.caller.role.as_str();
    let html = layout(
        page.title(),
        page.name(),
        role,
        &header(session, Some(page)),
        &main,
    );
    signed(html, session)
}

/// The header of a signed-in page: navigation (the pages `session` may open), who is
/// signed in, sign-out.
fn header(session: &Session, current: Option<Page>) -> String {
    let role = session.caller.role;
    let links: String = [Page::Fleet, Page::Allocations, Page::Health, Page::Boxes]
        .into_iter()
        .filter(|p| p.allowed(role))
        .map(|p| {
            let here = if Some(p) == current {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"/console/{}\"{here}>{}</a>", p.name(), p.title())
        })
        .collect();
    format!(
        "<header><a class=\"skip\" href=\"#main\">Skip to content</a><span class=\"brand\">Farmhand</span>\
         <nav aria-label=\"Console\">{links}</nav><span class=\"who\">{}: {}</span>\
         <form method=\"post\" action=\"/console/logout\"><button type=\"submit\">Sign out</button></form></header>",
        session.caller.role.as_str(),
        escape(&session.caller.name)
    )
}

/// One allocation's page: its details and timeline (`id` was checked to be the
/// session's to see, and is an id of ours: escaped all the same).
pub fn allocation(session: &Session, id: &str) -> Html<String> {
    let id = escape(id);
    let main = format!(
        "<p><a href=\"/console/allocations\">← Allocations</a></p><h1>Allocation <code>{id}</code></h1>\
         <p id=\"status\" role=\"status\" aria-live=\"polite\">Connecting…</p>\
         <section aria-labelledby=\"detail-title\"><h2 id=\"detail-title\">Now</h2><dl id=\"detail\"></dl>\
         <p id=\"actions\" class=\"actions\"></p></section>\
         <section aria-labelledby=\"timeline-title\"><h2 id=\"timeline-title\">Timeline</h2>\
         <ol id=\"timeline\" class=\"timeline\"></ol></section>"
    );
    let role = session.caller.role.as_str();
    let html = layout(
        "Allocation",
        "allocation",
        role,
        &header(session, None),
        &main,
    );
    let html = Html(
        html.0
            .replacen("<body ", &format!("<body data-allocation=\"{id}\" "), 1),
    );
    signed(html, session)
}

/// One modem's page (`imei` was checked to be an IMEI the fleet knows).
pub fn modem(session: &Session, imei: &str) -> Html<String> {
    let imei = escape(imei);
    let main = format!(
        "<p><a href=\"/console/fleet\">← Fleet</a></p><h1>Modem <code>{imei}</code></h1>\
         <p id=\"status\" role=\"status\" aria-live=\"polite\">Connecting…</p>\
         <div id=\"copies\"></div>"
    );
    let role = session.caller.role.as_str();
    let html = layout("Modem", "modem", role, &header(session, None), &main);
    let html = Html(
        html.0
            .replacen("<body ", &format!("<body data-modem=\"{imei}\" "), 1),
    );
    signed(html, session)
}

/// What a session gets for an allocation (`what`: "allocation") or a modem it may not see,
/// or that does not exist.
pub fn not_found(session: &Session, what: &str) -> Html<String> {
    let main = format!(
        "<h1>No such {what}</h1><p class=\"error\" role=\"alert\">This key sees no {what} \
         with that id: it may belong to another marketplace, be gone, or be mistyped.</p>\
         <p><a href=\"/console/fleet\">← Fleet</a></p>"
    );
    let role = session.caller.role.as_str();
    layout(
        "Not found",
        "forbidden",
        role,
        &header(session, None),
        &main,
    )
}

/// The sign-in page, with why the last attempt failed.
pub fn login(error: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let main = format!(
        "<h1>Sign in</h1>{error}<form method=\"post\" action=\"/console/login\" class=\"login\">\
         <label for=\"key\">API key</label><input id=\"key\" name=\"key\" type=\"password\" \
         autocomplete=\"off\" required autofocus><button type=\"submit\">Sign in</button>\
         <p class=\"hint\">An admin key sees the whole fleet; a marketplace key its own \
         allocations and the modems; a seller key its own boxes. The key is exchanged for a \
         session cookie and not kept in the browser.</p></form>"
    );
    let header = "<header><span class=\"brand\">Farmhand</span></header>";
    layout("Sign in", "login", "none", header, &main)
}

/// What a session gets for a page its role may not open.
pub fn forbidden(session: &Session) -> Html<String> {
    let home = Page::home(session.caller.role);
    let main = format!(
        "<h1>Not for this key</h1><p class=\"error\" role=\"alert\">This page is not open to \
         {} keys: sign in with a key that may see it, or go back to \
         <a href=\"{}\">{}</a>.</p>",
        session.caller.role.as_str(),
        home.path(),
        home.title()
    );
    let role = session.caller.role.as_str();
    layout(
        "Not for this key",
        "forbidden",
        role,
        &header(session, None),
        &main,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            escape("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
