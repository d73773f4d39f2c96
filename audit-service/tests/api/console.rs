//! `GET /console`: the page and its files, embedded in the binary, with headers that keep event data from running as code.

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_console_and_its_files_are_served_with_a_strict_content_security_policy() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
        ("/console/favicon.svg", "image/svg+xml"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert!(!response.text().await.unwrap().is_empty());
    }
    app.stop().await;
}

#[tokio::test]
async fn the_page_has_no_inline_script_or_style_for_the_policy_to_block() {
    let app = spawn_app().await;
    let html = app.get("/console").await.text().await.unwrap();
    let lower = html.to_ascii_lowercase();
    // Every <script> has a src, and no element carries a style or an event
    // handler attribute: the policy would block them, and the page must not
    // depend on anything it blocks.
    for (i, _) in lower.match_indices("<script") {
        let tag_end = lower[i..].find('>').unwrap() + i;
        assert!(lower[i..tag_end].contains(" src="), "inline script at {i}");
    }
    assert!(!lower.contains(" style="), "inline style attribute");
    assert!(!lower.contains("<style"), "inline style element");
    assert!(
        !lower.contains(" onclick=") && !lower.contains(" onload="),
        "inline handler"
    );
    // The JavaScript never parses text as HTML.
    let js = app.get("/console/console.js").await.text().await.unwrap();
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(sink), "console.js uses {sink}");
    }
    app.stop().await;
}
