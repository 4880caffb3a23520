//! The live console at `/console`: served by the binary, without a token,
//! each file with its type, a strict Content-Security-Policy and
//! `nosniff`; the page holds no inline script or style (the policy would
//! refuse them) and the script writes no HTML from strings. What the page
//! does in a browser is tested in `tests/browser` (headless Chromium).

use anyhow::Result;
use hongbao_server::console::CONTENT_SECURITY_POLICY;

use crate::helpers::*;

const FILES: [(&str, &str); 4] = [
    ("/console", "text/html; charset=utf-8"),
    ("/console/", "text/html; charset=utf-8"),
    ("/console/console.js", "text/javascript; charset=utf-8"),
    ("/console/console.css", "text/css; charset=utf-8"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_a_token_with_its_type_and_a_strict_content_security_policy() -> Result<()> {
    let server = start().await?;
    let api = &server.api;
    for (path, content_type) in FILES {
        let (status, headers, body) = api.get_text(path).await;
        assert_eq!(status, 200, "{path}");
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("");
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(header("content-security-policy"), CONTENT_SECURITY_POLICY, "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        assert!(!body.is_empty(), "{path}");
    }
    for policy in ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
        assert!(CONTENT_SECURITY_POLICY.contains(policy), "{policy}");
    }
    let (status, _, _) = api.get_text("/console/secrets.txt").await;
    assert_eq!(status, 404, "only the console's own files are served");
    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_page_has_no_inline_script_or_style_and_its_script_writes_no_html_from_strings() -> Result<()> {
    let server = start().await?;
    let api = &server.api;
    let (_, _, page) = api.get_text("/console").await;
    assert!(page.contains(r#"<script src="/console/console.js" defer></script>"#), "the script is a file");
    assert!(page.contains(r#"<link rel="stylesheet" href="/console/console.css">"#), "the style is a file");
    assert_eq!(page.matches("<script").count(), 1, "one script, and it is the file");
    assert!(!page.contains("<style"), "no inline style element");
    assert!(!page.contains(" style="), "no style attribute");
    let handler = |rest: &str| {
        let name = rest.trim_start_matches(|c: char| c.is_ascii_lowercase());
        name.len() < rest.len() && name.starts_with('=')
    };
    assert!(!page.split(" on").skip(1).any(handler), "no inline event handler (onclick=…)");
    let (_, _, script) = api.get_text("/console/console.js").await;
    for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
        assert!(!script.contains(sink), "the script never uses {sink}");
    }
    server.stop_and_audit().await
}
