//! User agents: decides what a `User-Agent` string says: the browser and its version,
//! the operating system, the device category, and whether it is a bot (a crawler, a
//! headless or scripted browser, an HTTP tool).
//!
//! Hand-written token matching rather than `woothee`: woothee depends on the `regex`
//! crate, whose engine was 348 KB of the worker's 1.27 MB of code (27%, measured with
//! `scripts/wasm-crates.mjs`) and compiles its patterns at the first parse of every cold
//! start. These rules read the product tokens browsers send (`Chrome/131`, `Firefox/133`,
//! `Version/17.1 Safari/…`) in the order that disambiguates them (Edge and Opera also say
//! `Chrome/`, Chrome also says `Safari/`), in one pass of substring searches.

/// A parsed user agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Agent {
    pub browser: String,
    pub version: String,
    pub os: String,
    /// `pc`, `smartphone`, `appliance`, `crawler` or `unknown`.
    pub category: String,
    pub bot: bool,
}

/// Markers of automated clients, matched case-insensitively.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "headless",
    "lighthouse",
    "phantomjs",
    "selenium",
    "puppeteer",
    "playwright",
    "curl/",
    "wget/",
    "python-",
    "python/",
    "go-http-client",
    "java/",
    "okhttp",
    "axios/",
    "node-fetch",
    "undici",
    "libwww",
    "scrapy",
    "httpclient",
    "facebookexternalhit",
    "embedly",
    "preview",
    "monitor",
    "pingdom",
    "uptime",
];

/// Named crawlers, for the browser field (the first one found).
const CRAWLERS: &[&str] = &[
    "Googlebot",
    "bingbot",
    "Applebot",
    "DuckDuckBot",
    "YandexBot",
    "Baiduspider",
    "facebookexternalhit",
    "Twitterbot",
    "LinkedInBot",
    "AhrefsBot",
    "SemrushBot",
    "GPTBot",
    "ClaudeBot",
    "PerplexityBot",
    "HeadlessChrome",
];

/// Browser product tokens, most specific first, with the name they stand for.
const BROWSERS: &[(&str, &str)] = &[
    ("Edg/", "Edge"),
    ("EdgA/", "Edge"),
    ("EdgiOS/", "Edge"),
    ("Edge/", "Edge"),
    ("OPR/", "Opera"),
    ("OPT/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("YaBrowser/", "Yandex Browser"),
    ("Vivaldi/", "Vivaldi"),
    ("UCBrowser/", "UC Browser"),
    ("FxiOS/", "Firefox"),
    ("Firefox/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("Chromium/", "Chrome"),
    ("MSIE ", "Internet Explorer"),
    ("Trident/", "Internet Explorer"),
];

/// The version after `token`: digits and dots.
fn version_after<'a>(ua: &'a str, token: &str) -> Option<&'a str> {
    let at = ua.find(token)? + token.len();
    let rest = ua.get(at..)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest.get(..end).filter(|v| !v.is_empty())
}

fn browser(ua: &str) -> (&'static str, Option<&str>) {
    for (token, name) in BROWSERS {
        if ua.contains(token) {
            // Trident/7 is IE 11; MSIE gives its own version.
            let v = if *token == "Trident/" {
                version_after(ua, "rv:")
            } else {
                version_after(ua, token)
            };
            return (name, v);
        }
    }
    if ua.contains("Safari/") && ua.contains("Version/") {
        return ("Safari", version_after(ua, "Version/"));
    }
    if ua.contains("AppleWebKit/") && (ua.contains("iPhone") || ua.contains("iPad")) {
        return ("Safari", None); // an in-app web view
    }
    ("UNKNOWN", None)
}

fn os(ua: &str) -> &'static str {
    const WINDOWS: &[(&str, &str)] = &[
        ("Windows NT 10.0", "Windows 10"),
        ("Windows NT 6.3", "Windows 8.1"),
        ("Windows NT 6.2", "Windows 8"),
        ("Windows NT 6.1", "Windows 7"),
    ];
    if let Some((_, name)) = WINDOWS.iter().find(|(t, _)| ua.contains(t)) {
        return name;
    }
    // iOS before macOS: an iPhone says `like Mac OS X`.
    for (token, name) in [
        ("Windows", "Windows"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("iPod", "iPod"),
        ("Android", "Android"),
        ("CrOS", "ChromeOS"),
        ("Mac OS X", "Mac OSX"),
        ("Macintosh", "Mac OSX"),
        ("PlayStation", "PlayStation"),
        ("Nintendo", "Nintendo"),
        ("Xbox", "Xbox"),
        ("Linux", "Linux"),
    ] {
        if ua.contains(token) {
            return name;
        }
    }
    "UNKNOWN"
}

fn category(os: &str, ua: &str) -> &'static str {
    match os {
        "iPhone" | "iPad" | "iPod" | "Android" => "smartphone",
        "Windows 10" | "Windows 8.1" | "Windows 8" | "Windows 7" | "Windows" | "Mac OSX"
        | "ChromeOS" => "pc",
        "PlayStation" | "Nintendo" | "Xbox" => "appliance",
        "Linux" if ua.contains("SmartTV") || ua.contains("SMART-TV") => "appliance",
        "Linux" => "pc",
        _ => "unknown",
    }
}

/// What a user agent says.
pub fn parse(ua: &str) -> Agent {
    let lower = ua.to_ascii_lowercase();
    let bot = BOT_MARKERS.iter().any(|m| lower.contains(m));
    let os = os(ua);
    let (name, version) = match CRAWLERS.iter().find(|c| ua.contains(*c)) {
        Some(c) => (*c, version_after(ua, &(String::from(*c) + "/"))),
        None => browser(ua),
    };
    Agent {
        browser: name.to_string(),
        version: version.unwrap_or("UNKNOWN").to_string(),
        os: os.to_string(),
        category: if bot { "crawler" } else { category(os, ua) }.to_string(),
        bot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real user agents: (ua, browser, version, os, category, bot).
    const TABLE: &[(&str, &str, &str, &str, &str, bool)] = &[
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
         "Chrome", "131.0.0.0", "Windows 10", "pc", false),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
         "Edge", "131.0.2903.86", "Windows 10", "pc", false),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
         "Opera", "115.0.0.0", "Windows 10", "pc", false),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
         "Firefox", "133.0", "Windows 10", "pc", false),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
         "Safari", "17.1", "Mac OSX", "pc", false),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
         "Safari", "17.1", "iPhone", "smartphone", false),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
         "Chrome", "131.0.6778.73", "iPhone", "smartphone", false),
        ("Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/133.0 Mobile/15E148 Safari/605.1.15",
         "Firefox", "133.0", "iPad", "smartphone", false),
        ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
         "Samsung Internet", "26.0", "Android", "smartphone", false),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
         "Chrome", "131.0.0.0", "Android", "smartphone", false),
        ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
         "Chrome", "131.0.0.0", "ChromeOS", "pc", false),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
         "Firefox", "133.0", "Linux", "pc", false),
        ("Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
         "Internet Explorer", "11.0", "Windows 7", "pc", false),
        ("Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)",
         "UNKNOWN", "UNKNOWN", "PlayStation", "appliance", false),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
         "Googlebot", "2.1", "UNKNOWN", "crawler", true),
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
         "bingbot", "2.0", "UNKNOWN", "crawler", true),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
         "HeadlessChrome", "131.0.0.0", "Linux", "crawler", true),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
         "facebookexternalhit", "1.1", "UNKNOWN", "crawler", true),
        ("curl/8.5.0", "UNKNOWN", "UNKNOWN", "UNKNOWN", "crawler", true),
        ("python-requests/2.32.3", "UNKNOWN", "UNKNOWN", "UNKNOWN", "crawler", true),
        ("", "UNKNOWN", "UNKNOWN", "UNKNOWN", "unknown", false),
    ];

    #[test]
    fn real_user_agents() {
        for (ua, browser, version, os, category, bot) in TABLE {
            let a = parse(ua);
            assert_eq!(
                (
                    a.browser.as_str(),
                    a.version.as_str(),
                    a.os.as_str(),
                    a.category.as_str(),
                    a.bot
                ),
                (*browser, *version, *os, *category, *bot),
                "{ua}"
            );
        }
    }

    #[test]
    fn any_string_parses() {
        for ua in [
            "Chrome/",
            "Version/ Safari/",
            "Trident/7.0",
            "é\u{0}Edg/9é",
            "Mozilla/5.0 (iPhone",
        ] {
            let _ = parse(ua);
        }
    }
}
