//! Audience export (reverse ETL): decides which of a segment's members go into an
//! upload file and writes it in the platform's customer-list columns. Meta Custom
//! Audiences take `email` and `phone` columns (a SHA-256 of the trimmed, lowercased
//! email; of the phone's digits with the country code and no `+`); Google Customer
//! Match takes `Email` and `Phone` (gmail dots removed; E.164 with `+`). Only hashes
//! computed by the SDK or a server source are written, never a raw value, and only
//! for members whose latest consent allows the platform (Meta: marketing; Google:
//! marketing and `ad_user_data`), as for a conversion.

use crate::destinations::{self, Hashes, Need};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Meta,
    Google,
}

impl Format {
    pub fn from_name(s: &str) -> Option<Format> {
        match s {
            "meta" => Some(Format::Meta),
            "google" => Some(Format::Google),
            _ => None,
        }
    }

    pub fn needs(self) -> &'static [Need] {
        match self {
            Format::Meta => &[Need::Marketing],
            Format::Google => &[Need::Marketing, Need::AdUserData],
        }
    }

    pub fn header(self) -> &'static str {
        match self {
            Format::Meta => "email,phone",
            Format::Google => "Email,Phone",
        }
    }

    /// The member's row: its email and phone digests in this platform's form.
    fn row(self, h: &Hashes) -> Option<String> {
        let first = |v: &[String]| v.first().cloned().unwrap_or_default();
        let (email, phone) = match self {
            Format::Meta => (first(&h.email), first(&h.phone_meta)),
            Format::Google => (first(h.google_emails()), first(&h.phone_e164)),
        };
        (!email.is_empty() || !phone.is_empty()).then(|| format!("{email},{phone}"))
    }
}

/// An export and what it left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Export {
    pub csv: String,
    pub rows: usize,
    /// Members whose consent does not allow the platform.
    pub no_consent: usize,
    /// Members with no digest this platform matches on.
    pub no_keys: usize,
}

/// The upload file for members given as `(hashes, latest context.consent)`.
pub fn export(format: Format, members: impl IntoIterator<Item = (Hashes, Value)>) -> Export {
    let mut out = Export {
        csv: format!("{}\n", format.header()),
        ..Export::default()
    };
    for (hashes, consent) in members {
        let as_event = json!({"context": {"consent": consent}});
        if !format
            .needs()
            .iter()
            .all(|n| destinations::granted(&as_event, *n))
        {
            out.no_consent += 1;
            continue;
        }
        match format.row(&hashes) {
            Some(r) => {
                out.csv.push_str(&r);
                out.csv.push('\n');
                out.rows += 1;
            }
            None => out.no_keys += 1,
        }
    }
    out
}
