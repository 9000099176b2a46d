//! `lucid-pii-compliance-auditor`: finds personal data and redacts it (CC6.1, C1.1,
//! P1.1).
//!
//! Recognisers are regexes plus a validator (Luhn for cards, mod-97 for IBANs, the SSN
//! rules) and, for formats that ordinary numbers share (dates, passport and licence
//! numbers, bare digit runs), context words that must appear just before. Each entity
//! type has an operator: a type tag, a mask, a keyed hash, or keep.

use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};
use regex::Regex;
use sha2::Sha256;

use super::normalize::fixed;
use super::{AuditError, Auditor, Finding, Outcome, Redaction, Segment, Stage, Subject, Verdict};
use crate::infer::service::Classifier;
use crate::config::auditors::{AuditorId, PiiEnv};
use crate::config::values::PiiOperator;

/// One entity type's recogniser.
struct Recognizer {
    entity: &'static str,
    regex: Regex,
    /// Context words, one of which must occur shortly before the match (None: not needed).
    context: Option<&'static [&'static str]>,
    validate: fn(&str) -> bool,
    score: f64,
}

/// Words just before a dotted quad that make it a version, not an address.
const VERSION_WORDS: &[&str] = &["version", "release", "v", "ver", "build", "firmware", "section", "§", "sdk"];

/// Words that say a date is someone's birth date, in the seven locales (en, de, fr, es,
/// it, nl), looked for just before the date.
const BIRTH_WORDS: &[&str] = &[
    "born", "birth", "dob", "d.o.b", "birthday", "geboren", "geb.", "geburtsdatum", "geburtstag", "né le", "née le", "né(e)", "né en", "naissance",
    "nacido", "nacida", "nací", "nació", "nacimiento", "nato il", "nata il", "nato/a", "nata/o", "nato a", "nata a", "nascita", "geboortedatum",
    "geboren op", "verjaardag",
];

/// Words that say a value is a driving licence's number, in the seven locales.
const DRIVING_WORDS: &[&str] = &[
    "driver's licen", "drivers licen", "driver licen", "driving licen", "dl#", "dl no", "licence number", "license number", "license no", "licence no",
    "license #", "license#", "licence #", "dmv", "dvla", "führerschein", "fuhrerschein", "permis de conduire", "permis n", "permis ",
    "carnet de conduc", "carné de conduc", "licencia de conduc", "permiso de conduc", "patente di guida", "patente", "rijbewijs",
    "fahrerlaubnis", "numéro de permis", "driving permit", "driver's permit", "dl number", "dl:", "license:", "licence:",
];

/// Month names and their abbreviations in the seven locales, longest first within a
/// language so the regex takes the whole word.
const MONTHS: &[&str] = &[
    // en
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sept", "sep", "oct", "nov", "dec",
    // de
    "januar", "jänner", "februar", "märz", "mai", "juni", "juli", "oktober", "dezember", "okt", "dez",
    // fr
    "janvier", "février", "fevrier", "mars", "avril", "juin", "juillet", "août", "aout", "septembre", "octobre", "novembre", "décembre", "decembre",
    "janv", "févr", "fevr", "avr", "juil",
    // es
    "enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "setiembre", "octubre", "noviembre", "diciembre",
    "ene", "dic",
    // it
    "gennaio", "febbraio", "aprile", "maggio", "giugno", "luglio", "settembre", "ottobre", "dicembre", "gen", "mag", "giu", "lug", "ago", "set", "ott",
    // nl
    "januari", "februari", "maart", "mei", "augustus", "mrt",
];

/// Dates as people write them in the seven locales: ISO, numeric with `.`, `/` or
/// `-`, "3. März 1985", "29 maggio 1951", "12 de marzo de 1980", "1er mars 1985",
/// "March 3rd, 1985".
fn date_pattern() -> String {
    let mut months: Vec<&str> = MONTHS.to_vec();
    months.sort_by_key(|m| std::cmp::Reverse(m.chars().count()));
    months.dedup();
    let month = format!("(?:{})\\.?", months.join("|"));
    format!(
        r"(?i)\b(?:\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}[./-]\d{{1,2}}[./-]\d{{2,4}}|\d{{1,2}}(?:st|nd|rd|th|er|º|°)?\.?\s+(?:de\s+)?{month},?\s+(?:de\s+)?\d{{4}}|{month}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})\b"
    )
}

/// How far before a match context words are looked for (bytes): a form's label and a
/// sentence's few words between it and the value ("patente ... al punto 5 c'è scritto").
const CONTEXT_WINDOW: usize = 80;

/// Compiles a recognizer's pattern with ASCII word boundaries. Every boundary in these
/// patterns sits beside an ASCII letter or digit of the value, where the two kinds of
/// boundary agree but for a value glued to a non-ASCII letter; a Unicode boundary makes
/// the regex engine leave its DFA on any non-ASCII text (German PII scan of 4 KB: 2.1 ms
/// against 0.12 ms for English before this).
fn token(pattern: &str) -> Regex {
    fixed(&pattern.replace(r"\b", r"(?-u:\b)"))
}

fn recognizers() -> &'static [Recognizer] {
    static R: OnceLock<Vec<Recognizer>> = OnceLock::new();
    R.get_or_init(|| {
        vec![
            Recognizer {
                entity: "email_address",
                regex: token(r"\b[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b"),
                context: None,
                validate: |_| true,
                score: 0.95,
            },
            Recognizer {
                entity: "iban",
                regex: token(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
                context: None,
                validate: valid_iban,
                score: 0.95,
            },
            Recognizer {
                entity: "credit_card",
                regex: token(r"\b(?:\d[ -]?){12,18}\d\b"),
                context: None,
                validate: valid_card,
                score: 0.95,
            },
            Recognizer {
                entity: "us_ssn",
                regex: token(r"\b\d{3}-\d{2}-\d{4}\b"),
                context: None,
                validate: valid_ssn,
                score: 0.85,
            },
            Recognizer {
                entity: "us_ssn",
                regex: token(r"\b\d{9}\b"),
                context: Some(&["ssn", "social security", "social-security", "ss#"]),
                validate: valid_ssn,
                score: 0.8,
            },
            // National identifiers of the seven locales' countries, each with its check
            // digit where it has one (the recognisers Presidio ships for them, and FR/NL/DE).
            Recognizer { entity: "es_nif", regex: token(r"\b\d{8}-?[A-Z]\b"), context: None, validate: valid_es_nif, score: 0.9 },
            Recognizer { entity: "es_nie", regex: token(r"\b[XYZ]-?\d{7}-?[A-Z]\b"), context: None, validate: valid_es_nie, score: 0.9 },
            Recognizer {
                entity: "it_fiscal_code",
                regex: token(r"\b[A-Z]{6}\d{2}[A-EHLMPRST]\d{2}[A-Z]\d{3}[A-Z]\b"),
                context: None,
                validate: valid_it_fiscal_code,
                score: 0.9,
            },
            Recognizer {
                entity: "fr_nir",
                regex: token(r"\b[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b"),
                context: None,
                validate: valid_fr_nir,
                score: 0.85,
            },
            Recognizer {
                entity: "uk_nino",
                regex: token(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"),
                context: None,
                validate: |s| s.get(..2).is_some_and(|p| !["BG", "GB", "NK", "KN", "TN", "NT", "ZZ"].contains(&p)),
                score: 0.85,
            },
            Recognizer {
                entity: "uk_nhs",
                regex: token(r"\b\d{3}[ -]?\d{3}[ -]?\d{4}\b"),
                context: Some(&["nhs"]),
                validate: valid_uk_nhs,
                score: 0.85,
            },
            Recognizer {
                entity: "nl_bsn",
                regex: token(r"\b(?:\d{9}|\d{4}\.\d{2}\.\d{3}|\d{3} \d{3} \d{3})\b"),
                context: Some(&["bsn", "burgerservicenummer", "sofinummer", "sofi-nummer", "sofi nummer"]),
                validate: valid_nl_bsn,
                score: 0.85,
            },
            Recognizer {
                entity: "de_tax_id",
                regex: token(r"\b\d{2} ?\d{3} ?\d{3} ?\d{3}\b"),
                context: Some(&["steuer", "steuer-id", "steueridentifikationsnummer", "identifikationsnummer", "idnr", "tin", "tax id"]),
                validate: valid_de_tax_id,
                score: 0.85,
            },
            // Phone numbers: candidates by shape, kept only where libphonenumber's
            // metadata (the `phonenumber` port) says they are valid numbers, for their
            // country code or, without one, in one of the seven locales' countries.
            Recognizer {
                entity: "phone_number",
                regex: token(r"(?:\+|\b00)\d{1,3}[ .\-/]?(?:\(0\)[ .\-/]?)?(?:\(?\d{1,5}\)?[ .\-/]?){1,5}\d{1,5}\b"),
                context: None,
                validate: valid_phone,
                score: 0.85,
            },
            Recognizer {
                entity: "phone_number",
                regex: token(r"(?:\b1[-. ])?(?:\(\d{3}\) ?|\b\d{3}[-.])\d{3}[-.]\d{4}\b"),
                context: None,
                validate: valid_phone,
                score: 0.75,
            },
            Recognizer {
                entity: "phone_number",
                regex: token(r"(?:\(0\d{1,5}\)|\b0\d{1,5})[ .\-/]?\d{2,5}(?:[ .\-/]?\d{2,5}){0,3}\b"),
                context: None,
                validate: valid_phone,
                score: 0.7,
            },
            // Spaced national numbers without a trunk prefix (Spanish "650 32 13 45",
            // Italian mobiles "335 175 3248"): only where the metadata knows them, and
            // not grouped in threes like an amount ("650 000 000").
            Recognizer {
                entity: "phone_number",
                regex: token(r"\b\d{2,3}(?:[ .]\d{2,4}){2,3}\b"),
                context: None,
                validate: |s| !thousands(s) && valid_phone(s),
                score: 0.65,
            },
            Recognizer {
                entity: "phone_number",
                regex: token(r"(?:\(\d{2,5}\) ?|\b)\d{2,4}(?:[ .\-]?\d{2,4}){1,4}\b"),
                context: Some(PHONE_WORDS),
                validate: possible_phone,
                score: 0.6,
            },
            Recognizer {
                entity: "ip_address",
                regex: token(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"),
                context: None,
                validate: |_| true,
                score: 0.7,
            },
            Recognizer {
                entity: "ip_address",
                regex: token(r"(?i)(?:[0-9a-f]{1,4}:){2,7}[0-9a-f]{0,4}(?::[0-9a-f]{1,4})*|::(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{1,4}"),
                context: None,
                validate: |s| s.parse::<std::net::Ipv6Addr>().is_ok() && s.matches(':').count() >= 2,
                score: 0.7,
            },
            Recognizer {
                entity: "date_of_birth",
                regex: token(&date_pattern()),
                context: Some(BIRTH_WORDS),
                validate: |_| true,
                score: 0.85,
            },
            Recognizer {
                entity: "passport",
                regex: token(r"\b[A-Z0-9]{6,9}\b"),
                context: Some(&["passport", "reisepass", "pass-nr", "passnummer", "passeport", "pasaporte", "passaporto", "paspoort", "paspoortnummer"]),
                validate: |s| s.chars().any(|c| c.is_ascii_digit()),
                score: 0.8,
            },
            // A UK (DVLA) licence number says what it is by its shape: five letters of
            // the surname (padded with 9), the birth date with the month plus 50 for
            // women, two initials, a digit and two check letters.
            Recognizer {
                entity: "drivers_license",
                regex: token(r"\b[A-Z9]{5} ?\d[0156]\d[0-3]\d\d ?[A-Z9]{2}\d[A-Z]{2}\b"),
                context: None,
                validate: |s| s.chars().any(|c| c.is_ascii_alphabetic()) && !s.starts_with("99999"),
                score: 0.85,
            },
            Recognizer {
                entity: "drivers_license",
                // 5 to 19 characters: the US states' formats run from five (letters
                // and digits alternating) to nineteen (a letter and 18 digits).
                regex: token(r"\b[A-Z0-9][A-Z0-9-]{3,17}[A-Z0-9]\b"),
                context: Some(DRIVING_WORDS),
                // A digit, and not a versioned name after "License:" ("LGPL-2",
                // "UTF-16", "ISO-8859"): no licence format has letters, a dash, digits.
                validate: |s| s.chars().any(|c| c.is_ascii_digit()) && !is_versioned_name(s),
                score: 0.8,
            },
        ]
    })
}

/// "LGPL-2", "UTF-16", "ISO-8859", "MV-82": letters, a dash, then digits only.
fn is_versioned_name(s: &str) -> bool {
    s.split_once('-').is_some_and(|(name, version)| {
        (1..=5).contains(&name.len()) && name.chars().all(|c| c.is_ascii_uppercase()) && !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '-')
    })
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// Spanish DNI/NIF: eight digits and the letter of their remainder mod 23.
pub fn valid_es_nif(s: &str) -> bool {
    let s: String = s.chars().filter(|c| *c != '-').collect();
    let (Some(num), Some(letter)) = (s.get(..8), s.get(8..)) else { return false };
    letter.len() == 1 && num.parse::<u32>().is_ok_and(|n| letter.chars().next() == "TRWAGMYFPDXBNJZSQVHLCKE".chars().nth((n % 23) as usize))
}

/// Spanish NIE: X, Y or Z (0, 1, 2), seven digits, and the NIF letter of the whole.
pub fn valid_es_nie(s: &str) -> bool {
    let s: String = s.chars().filter(|c| *c != '-').collect();
    let prefix = match s.chars().next() {
        Some('X') => '0',
        Some('Y') => '1',
        Some('Z') => '2',
        _ => return false,
    };
    s.get(1..).is_some_and(|rest| valid_es_nif(&format!("{prefix}{rest}")))
}

/// Italian codice fiscale: the check letter over the first fifteen characters.
pub fn valid_it_fiscal_code(s: &str) -> bool {
    const ODD: [u32; 26] = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23];
    let b = s.as_bytes();
    if b.len() != 16 || !b.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()) {
        return false;
    }
    let mut sum = 0u32;
    for (i, c) in b[..15].iter().enumerate() {
        // A digit counts as the letter at its index (0 -> A).
        let index = if c.is_ascii_digit() { u32::from(c - b'0') } else { u32::from(c - b'A') };
        sum += if i % 2 == 0 { ODD[index as usize] } else { index };
    }
    b[15].is_ascii_uppercase() && u32::from(b[15] - b'A') == sum % 26
}

/// French NIR: thirteen digits (Corsica's 2A/2B as 19/18) and the key 97 - n mod 97.
pub fn valid_fr_nir(s: &str) -> bool {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if s.len() != 15 {
        return false;
    }
    let (Some(body), Some(key)) = (s.get(..13), s.get(13..)) else { return false };
    match (body.replace("2A", "19").replace("2B", "18").parse::<u64>(), key.parse::<u64>()) {
        (Ok(n), Ok(key)) => 97 - n % 97 == key,
        _ => false,
    }
}

/// UK NHS number: ten digits, the last a mod-11 check digit.
pub fn valid_uk_nhs(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 10 {
        return false;
    }
    let sum: u32 = d[..9].iter().enumerate().map(|(i, x)| x * (10 - i as u32)).sum();
    match 11 - sum % 11 {
        11 => d[9] == 0,
        10 => false,
        check => d[9] == check,
    }
}

/// Dutch BSN: nine digits passing the eleven test (the last weighted -1).
pub fn valid_nl_bsn(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 || d.iter().all(|x| *x == 0) {
        return false;
    }
    let sum: i64 = d[..8].iter().enumerate().map(|(i, x)| i64::from(*x) * (9 - i as i64)).sum::<i64>() - i64::from(d[8]);
    sum % 11 == 0
}

/// German tax id (Steuer-IdNr.): eleven digits, no leading zero, ISO 7064 MOD 11,10.
pub fn valid_de_tax_id(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 11 || d[0] == 0 {
        return false;
    }
    let mut product = 10;
    for x in &d[..10] {
        let mut sum = (x + product) % 10;
        if sum == 0 {
            sum = 10;
        }
        product = (sum * 2) % 11;
    }
    let check = match 11 - product {
        10 => 0,
        c => c,
    };
    d[10] == check
}

/// Luhn checksum plus a known issuer prefix and length.
pub fn valid_card(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) || d.iter().all(|x| *x == d[0]) {
        return false;
    }
    let prefix2 = d[0] * 10 + d[1];
    let prefix4 = prefix2 * 100 + d[2] * 10 + d[3];
    let issuer = d[0] == 4
        || (51..=55).contains(&prefix2)
        || (2221..=2720).contains(&prefix4)
        || prefix2 == 34
        || prefix2 == 37
        || prefix4 == 6011
        || prefix2 == 65
        || prefix2 == 35
        || prefix2 == 36
        || prefix2 == 38
        || prefix2 == 62;
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, x)| if i % 2 == 1 { let y = x * 2; if y > 9 { y - 9 } else { y } } else { *x })
        .sum();
    issuer && sum.is_multiple_of(10)
}

/// ISO 13616: country code, check digits, mod 97 == 1.
pub fn valid_iban(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    // ASCII only, so that the byte slicing below falls on character boundaries.
    if !compact.is_ascii() || !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = format!("{}{}", &compact[4..], &compact[..4]);
    let mut rem: u64 = 0;
    for c in rearranged.chars() {
        let v = match c {
            '0'..='9' => c as u64 - '0' as u64,
            'A'..='Z' => c as u64 - 'A' as u64 + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

/// SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub fn valid_ssn(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 {
        return false;
    }
    let area = d[0] * 100 + d[1] * 10 + d[2];
    let group = d[3] * 10 + d[4];
    let serial = d[5] * 1000 + d[6] * 100 + d[7] * 10 + d[8];
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && !d.iter().all(|x| *x == d[0])
}

/// Countries whose national formats a number without a country code is tried in: the
/// seven locales'.
const PHONE_REGIONS: [phonenumber::country::Id; 7] = {
    use phonenumber::country::Id::*;
    [US, GB, DE, FR, ES, IT, NL]
};

/// Words that say a number is a phone number, in the seven locales.
const PHONE_WORDS: &[&str] = &[
    "phone", "tel", "call", "mobile", "cell", "whatsapp", "fax", "contact", "text me", "ring", "telefon", "handy", "mobil", "rufnummer", "anrufen",
    "téléphone", "tél", "portable", "joindre", "appel", "teléfono", "telefono", "móvil", "movil", "llam", "llám", "cellulare", "chiam", "telefoon", "mobiel", "bel ",
];

/// A valid phone number by libphonenumber's metadata: with a country code (`+` or
/// `00`), for that country; without, in one of [`PHONE_REGIONS`]. Dates and dotted
/// versions are not numbers to call.
fn valid_phone(s: &str) -> bool {
    let n = digits(s).len();
    if !(7..=15).contains(&n) || looks_like_date(s) || dotted_version(s) {
        return false;
    }
    let s = s.trim();
    // With a country code the shape says "phone number" by itself: the country code
    // must exist and the rest be of a length that country uses (so a synthetic or
    // newly allocated number still counts); without one the metadata must know it.
    let international = match s.strip_prefix("00").filter(|_| !s.starts_with("000")) {
        Some(rest) => Some(format!("+{rest}")),
        None => s.starts_with('+').then(|| s.to_string()),
    };
    if let Some(number) = international {
        return phonenumber::parse(None, &number).is_ok_and(|p| {
            let national = p.national().value().to_string().len();
            phonenumber::is_valid(&p) || (phonenumber::is_viable(&number) && (6..=13).contains(&national))
        });
    }
    PHONE_REGIONS.iter().any(|r| phonenumber::parse(Some(*r), s).is_ok_and(|p| phonenumber::is_valid(&p)))
}

/// `10.0.19041.1234`, `2.17.0.11`: dotted with a one-digit part or four parts, a version
/// (`718.634.1193` and `06.12.34.56.78` are phone numbers).
fn dotted_version(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    !s.starts_with('+') && parts.len() >= 3 && (parts.iter().any(|p| p.trim().len() == 1) || (parts.len() == 4 && parts.iter().all(|p| p.len() <= 3)))
}

/// `650 000 000`, `1 250 000`: digits grouped in threes, as amounts are written.
fn thousands(s: &str) -> bool {
    let groups: Vec<&str> = s.split([' ', '.']).collect();
    groups.len() >= 2 && groups[0].len() <= 3 && groups[1..].iter().all(|g| g.len() == 3)
}

/// With a phone word just before it ("call", "Telefon", "portable"...): a number of
/// phone-number shape and length, even where the metadata does not know it (test
/// ranges such as 555, numbers allocated after the metadata).
fn possible_phone(s: &str) -> bool {
    let n = digits(s).len();
    (7..=15).contains(&n) && !looks_like_date(s) && phonenumber::is_viable(s.trim())
}

/// Whether `start..end` is part of a longer token (`T936-0269-3782`, `xoxb-0330...-`):
/// a letter, digit or joiner right before it, or a joiner and a letter or digit right after.
fn glued(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let mut after = text[end..].chars();
    let joiner = |c: char| matches!(c, '-' | '_' | '/' | '.');
    let before_glued = before.is_some_and(|c| c.is_alphanumeric() || c == '_' || (joiner(c) && text[..start].chars().rev().nth(1).is_some_and(char::is_alphanumeric)));
    let after_glued = after.next().is_some_and(|c| c.is_alphanumeric() || (joiner(c) && after.next().is_some_and(char::is_alphanumeric)));
    before_glued || after_glued
}

/// `d.m.y`, `m/d/y` and the like with a plausible day and month.
fn looks_like_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split(['.', '/', '-']).collect();
    let num = |p: &str| p.parse::<u32>().ok().filter(|_| p.len() <= 2);
    // Day first (Europe) or month first (US).
    parts.len() == 3
        && matches!(parts[2].len(), 2 | 4)
        && match (num(parts[0]), num(parts[1])) {
            (Some(a), Some(b)) => (1..=31).contains(&a) && (1..=12).contains(&b) || (1..=12).contains(&a) && (1..=31).contains(&b),
            _ => false,
        }
}

/// Whether one of the two words right before `start` is in `words` (looking back at
/// most the context window, so many matches in a long text stay linear).
fn preceded_by_word(text: &str, start: usize, words: &[&str]) -> bool {
    let mut from = start.saturating_sub(CONTEXT_WINDOW);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let before = text[from..start].to_lowercase();
    before
        .split(|c: char| !c.is_alphanumeric() && c != '§')
        .filter(|w| !w.is_empty())
        .rev()
        .take(2)
        .any(|w| words.contains(&w))
}

fn has_context(text: &str, start: usize, words: &[&str]) -> bool {
    has_context_within(text, start, CONTEXT_WINDOW, words)
}

fn has_context_within(text: &str, start: usize, window: usize, words: &[&str]) -> bool {
    let mut from = start.saturating_sub(window);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let before = text[from..start].to_lowercase();
    // A context word starts a word ("tin" is not in "setting", "dl" not in "wsdl"); it
    // may end inside one, as prefixes do ("führerschein" in "führerscheinnummer").
    words.iter().any(|w| before.match_indices(w).any(|(i, _)| !before[..i].chars().next_back().is_some_and(char::is_alphanumeric)))
}

/// Finds PII in one text (a normalised view or a decoded layer): (entity, start, end, score).
pub fn detect(text: &str) -> Vec<(&'static str, usize, usize, f64)> {
    let mut out: Vec<(&'static str, usize, usize, f64)> = Vec::new();
    for r in recognizers() {
        for m in r.regex.find_iter(text) {
            if let Some(words) = r.context {
                if !has_context(text, m.start(), words) {
                    continue;
                }
            }
            if !(r.validate)(m.as_str()) {
                continue;
            }
            if r.entity == "ip_address" && m.as_str().contains('.') && preceded_by_word(text, m.start(), VERSION_WORDS) {
                continue;
            }
            if r.entity == "phone_number" && glued(text, m.start(), m.end()) {
                continue;
            }
            // The first recogniser to claim a span wins (cards before phones, SSNs before dates).
            if out.iter().any(|(_, s, e, _)| m.start() < *e && *s < m.end()) {
                continue;
            }
            out.push((r.entity, m.start(), m.end(), r.score));
        }
    }
    record_birth_dates(text, &mut out);
    out.sort_by_key(|(_, s, _, _)| *s);
    out
}

/// A full date with a birth year in the same line as someone's other identifiers (a CSV
/// row, a form, "Name;25-06-1952;NINO;phone;e-mail"), where nothing names it a birth date:
/// in a person's record a date of that age is their birth date, or identifying anyway.
fn record_birth_dates(text: &str, out: &mut Vec<(&'static str, usize, usize, f64)>) {
    static DATE: OnceLock<Regex> = OnceLock::new();
    const NEAR: usize = 160;
    let personal = |kind: &str| !matches!(kind, "ip_address" | "date_of_birth" | "credit_card" | "iban");
    if !out.iter().any(|(k, ..)| personal(k)) {
        return;
    }
    let date = DATE.get_or_init(|| token(&date_pattern()));
    let latest = latest_birth_year();
    let mut found = Vec::new();
    for m in date.find_iter(text) {
        let birth_year = m.as_str().split(|c: char| !c.is_ascii_digit()).any(|y| y.len() == 4 && y.parse::<u32>().is_ok_and(|y| (1900..=latest).contains(&y)));
        if !birth_year || out.iter().any(|(_, s, e, _)| m.start() < *e && *s < m.end()) {
            continue;
        }
        let line_start = text[..m.start()].rfind('\n').map_or(0, |i| i + 1).max(m.start().saturating_sub(NEAR));
        let line_end = text[m.end()..].find('\n').map_or(text.len(), |i| m.end() + i).min(m.end() + NEAR);
        if out.iter().any(|(k, s, e, _)| personal(k) && *s >= line_start && *e <= line_end) {
            found.push(("date_of_birth", m.start(), m.end(), 0.6));
        }
    }
    out.extend(found);
}

/// The latest year a date of birth in a record is taken to be in: twelve years ago.
fn latest_birth_year() -> u32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as u32 - 12
}

/// The auditor, configured.
pub struct PiiAuditor {
    env: PiiEnv,
    hash_key: [u8; 32],
    /// The model pack whose token head finds people's names, if one is loaded.
    names: Option<Arc<Classifier>>,
}

impl PiiAuditor {
    /// An auditor with these settings; `hash_key` keys the `hash` operator; `names`, a
    /// classifier with a token head for people's names. Compiles the recognisers and
    /// loads the phone-number metadata now, when the chain is built, rather than on the
    /// first request.
    pub fn new(env: PiiEnv, hash_key: [u8; 32], names: Option<Arc<Classifier>>) -> PiiAuditor {
        let _ = detect("+1 212-555-0147");
        let names = names.filter(|c| c.batcher.model().token_heads.iter().any(|h| h.entity == "person"));
        PiiAuditor { env, hash_key, names }
    }

    /// People's names in each segment's view, (entity, start, end, probability): what
    /// the guardrails auditor's pass already found with the same model, else scored now.
    fn names(&self, stage: Stage, subject: &Subject, deadline: std::time::Instant) -> Result<Vec<Vec<super::EntitySpan>>, AuditError> {
        let Some(c) = &self.names else { return Ok(vec![Vec::new(); subject.segments.len()]) };
        // What this model's pass left on a segment (the guardrails auditor's, or ours).
        fn found<'a>(s: &'a Segment, model: &std::path::Path) -> Option<&'a super::TokenFindings> {
            s.token_findings.get().filter(|t| t.model == model)
        }
        let todo: Vec<&Segment> = subject.segments.iter().filter(|s| found(s, &c.dir).is_none() && !s.view.text.trim().is_empty()).collect();
        if !todo.is_empty() {
            let texts: Vec<&str> = todo.iter().map(|s| s.view.text.as_str()).collect();
            let scored = c.batcher.score(&texts, stage.priority(), deadline).map_err(|e| AuditError::new(format!("names classifier {}: {e}", c.dir.display())))?;
            for (seg, scores) in todo.into_iter().zip(scored) {
                let _ = seg.token_findings.set(super::classify::token_findings(c.batcher.model(), &c.dir, &seg.view.text, 0, &scores));
            }
        }
        // Only its people: a pack's other token heads are not this auditor's entities.
        Ok(subject.segments.iter().map(|s| found(s, &c.dir).map(|t| t.spans.iter().filter(|f| f.0 == "person").cloned().collect()).unwrap_or_default()).collect())
    }

    fn operator(&self, entity: &str) -> PiiOperator {
        self.env.pii_operators.0.get(entity).copied().unwrap_or(self.env.pii_operator)
    }

    /// The text that replaces `value`; `hash` is its keyed hash, already computed for
    /// the finding.
    fn replacement(&self, entity: &str, value: &str, hash: &str) -> Option<String> {
        let tag = entity.to_ascii_uppercase();
        match self.operator(entity) {
            PiiOperator::Keep => None,
            PiiOperator::Tag => Some(format!("<{tag}>")),
            PiiOperator::Mask => Some("*".repeat(value.chars().count())),
            PiiOperator::Hash => Some(format!("<{tag}:{hash}>")),
        }
    }
}

/// First 8 bytes (hex) of HMAC-SHA256(key, value): equal values stay joinable across
/// records without the value being recoverable.
pub fn keyed_hash(key: &[u8; 32], value: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return String::new() };
    mac.update(value.as_bytes());
    lucid_common::hex::encode(&mac.finalize().into_bytes()[..8])
}

impl Auditor for PiiAuditor {
    fn id(&self) -> AuditorId {
        AuditorId::PiiCompliance
    }

    fn audit(&self, stage: Stage, subject: &Subject, deadline: std::time::Instant) -> Result<Verdict, AuditError> {
        if !self.env.pii_detection_enabled.0 {
            return Ok(Verdict::proceed());
        }
        let mut v = Verdict::proceed();
        let mut hits: Vec<Vec<super::Hit<String>>> = Vec::new();
        for seg in &subject.segments {
            hits.push(seg.find(detect).into_iter().map(|h| super::Hit { kind: h.kind.to_string(), start: h.start, end: h.end, score: h.score, encoding: h.encoding }).collect());
        }
        // Names need the classifier; where it cannot answer in time, what the rules
        // found stands and the error says why the rest is missing.
        let names = self.names(stage, subject, deadline);
        if let Ok(names) = &names {
            for ((seg, found), names) in subject.segments.iter().zip(&mut hits).zip(names) {
                for (entity, s, e, score) in names {
                    let (start, end) = seg.view.original_span(*s, *e);
                    if !found.iter().any(|h| start < h.end && h.start < end) {
                        found.push(super::Hit { kind: entity.clone(), start, end, score: *score, encoding: None });
                    }
                }
                found.sort_by_key(|h| h.start);
            }
        }
        for (i, (seg, found)) in subject.segments.iter().zip(hits).enumerate() {
            for super::Hit { kind: entity, start: a, end: b, score, encoding } in found {
                let Some(value) = seg.original.get(a..b) else { continue };
                let hash = keyed_hash(&self.hash_key, value);
                if self.env.pii_redact_on_detection.0 {
                    if let Some(replacement) = self.replacement(&entity, value, &hash) {
                        v.redactions.push(Redaction { segment: i, start: a, end: b, replacement });
                    }
                }
                v.findings.push(Finding { kind: entity, segment: i, start: a, end: b, score, encoding, hash: Some(hash) });
            }
        }
        if !v.findings.is_empty() {
            v.outcome = if v.redactions.is_empty() { Outcome::Warn } else { Outcome::Redact };
            v.reason = Some(format!("personal data found: {}", super::finding_kinds(&v.findings)));
            v.scores.insert("pii".into(), v.findings.iter().map(|f| f.score).fold(0.0, f64::max));
        }
        match names {
            Ok(_) => Ok(v),
            Err(e) => Err(e.with_partial(v)),
        }
    }

    fn blocks(&self) -> bool {
        self.names.is_some()
    }

    fn classifier(&self) -> Option<super::ClassifierFacts> {
        let c = self.names.as_ref()?;
        Some(super::ClassifierFacts { dir: c.dir.display().to_string(), signals: Vec::new(), scoring: c.batcher.model().scoring() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<&'static str> {
        detect(text).into_iter().map(|(k, ..)| k).collect()
    }

    /// The validators are public: no input panics them (they are fed regex matches, but
    /// that is the regexes' promise, not theirs); nor the detector around context words.
    #[test]
    fn no_input_panics_the_validators() {
        let validators: [fn(&str) -> bool; 11] = [
            valid_es_nif, valid_es_nie, valid_it_fiscal_code, valid_fr_nir, valid_uk_nhs, valid_nl_bsn, valid_de_tax_id, valid_phone, possible_phone, valid_card, valid_iban,
        ];
        let pieces = ["", "-", "X", "Z", "2A", "ü", "日本", "0", "9", "12345678", "a", "Ω", " ", "+", "00", "(0)", ".", "/"];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(x % 7) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push_str(pieces[(x % pieces.len() as u64) as usize]);
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for v in validators {
                let _ = v(&text);
            }
            let _ = detect(&format!("call NHS BSN Steuer-ID born {text} {text}"));
        }
    }

    #[test]
    fn recognisers_compile_and_find_each_entity() {
        assert_eq!(kinds("mail jane.doe@example.com now"), ["email_address"]);
        assert_eq!(kinds("card 4111 1111 1111 1111 exp"), ["credit_card"]);
        assert_eq!(kinds("card 4111 1111 1111 1112 exp"), Vec::<&str>::new(), "fails Luhn");
        assert_eq!(kinds("IBAN GB82 WEST 1234 5698 7654 32"), ["iban"]);
        assert_eq!(kinds("IBAN GB82 WEST 1234 5698 7654 33"), Vec::<&str>::new(), "fails mod 97");
        assert_eq!(kinds("ssn 123-45-6789"), ["us_ssn"]);
        assert_eq!(kinds("id 000-12-3456"), Vec::<&str>::new());
        assert_eq!(kinds("call me at +44 20 7946 0958"), ["phone_number"]);
        assert_eq!(kinds("call (555) 123-4567"), ["phone_number"]);
        // Issue 15: national identifiers with their check digits; one digit changed is not one.
        for (text, kind) in [
            ("DNI 12345678Z", "es_nif"),
            ("NIE X1234567L", "es_nie"),
            ("codice fiscale RSSMRA85T10A562S", "it_fiscal_code"),
            ("numéro de sécurité sociale 1 85 05 78 006 084 91", "fr_nir"),
            ("NI number AB 12 34 56 C", "uk_nino"),
            ("NHS number 943 476 5919", "uk_nhs"),
            ("mijn BSN is 111222333", "nl_bsn"),
            ("BSN: 111 222 333", "nl_bsn"),
            ("Steuer-ID 86095742719", "de_tax_id"),
            ("Reisepass C01X00T47", "passport"),
            ("Führerschein B072RRE2I55", "drivers_license"),
        ] {
            assert_eq!(kinds(text), [kind], "{text}");
        }
        for (text, kind) in [
            ("DNI 12345678A", "es_nif"),
            ("NIE X1234567A", "es_nie"),
            ("codice fiscale RSSMRA85T10A562T", "it_fiscal_code"),
            ("NHS number 943 476 5918", "uk_nhs"),
            ("mijn BSN is 111222334", "nl_bsn"),
            ("Steuer-ID 86095742718", "de_tax_id"),
            ("numéro 1 85 05 78 006 084 92", "fr_nir"),
        ] {
            assert!(!kinds(text).contains(&kind), "{text}: {:?}", kinds(text));
        }
        // Issue 15: numbers as the seven locales write them, checked by libphonenumber's
        // metadata; digit strings that are not phone numbers stay.
        for text in [
            "Ruf mich an: +49 30 901820",
            "Meine Nummer ist 030 901820",
            "Handy: 0151 23456789",
            "Appelez-moi au 01 42 68 53 00",
            "mon portable : 06 12 34 56 78",
            "Llámame al +34 612 345 678",
            "mi móvil es 612 345 678",
            "chiamami al 347 123 4567",
            "Bel me op 06-12345678",
            "reach me on 020 7946 0958",
            "my cell is 0044 20 7946 0958",
            "+1 212-555-0147",
        ] {
            assert_eq!(kinds(text), ["phone_number"], "{text}");
        }
        for text in [
            "Order 1234567 shipped on 01.02.2023.",
            "Version 10.4.12 fixes it.",
            "The invoice total is 1234567890 cents.",
            "Tracking: 9400 1000 0000 0000 0000 00",
        ] {
            assert!(!kinds(text).contains(&"phone_number"), "{text}: {:?}", kinds(text));
        }
        assert_eq!(kinds("host 192.168.10.4 down"), ["ip_address"]);
        assert_eq!(kinds("v6 2001:db8::8a2e:370:7334 up"), ["ip_address"]);
        assert_eq!(kinds("born on 1985-03-12 in Leeds"), ["date_of_birth"]);
        // Issue 15: birth dates as the seven locales write them.
        for text in [
            "She was born on March 3rd, 1985 in Ohio.",
            "DOB: 04/11/1990",
            "Date of birth: 3 March 1985",
            "Geboren am 3. März 1985 in Köln",
            "Geburtsdatum: 03.04.1990",
            "Née le 1er mars 1985 à Lyon",
            "date de naissance : 12/05/1979",
            "Nacido el 12 de marzo de 1980 en Sevilla",
            "fecha de nacimiento: 12-03-1980",
            "Nato il 29 maggio 1951 a Roma",
            "data di nascita 29/05/1951",
            "Geboren op 3 maart 1985 in Utrecht",
            "geboortedatum: 03-03-1985",
        ] {
            assert_eq!(kinds(text), ["date_of_birth"], "{text}");
        }
        // A date that is not a birth date stays.
        assert!(kinds("The meeting is on 3 March 2025.").is_empty());
        assert!(kinds("Die Rechnung vom 3. März 2025 ist fällig.").is_empty());
        assert_eq!(kinds("the release of 1985-03-12"), Vec::<&str>::new(), "a date without context");
        assert_eq!(kinds("passport number X1234567"), ["passport"]);
        assert_eq!(kinds("driver's license D123-4567-8901"), ["drivers_license"]);
    }

    #[test]
    fn config_knows_exactly_the_entities_the_recognisers_find() {
        let mut found: Vec<&str> = recognizers().iter().map(|r| r.entity).collect();
        // People's names come from the model pack's token head (see `names`).
        found.push("person");
        found.sort_unstable();
        found.dedup();
        let mut known = crate::config::values::PII_ENTITIES.to_vec();
        known.sort_unstable();
        assert_eq!(found, known, "PII_ENTITIES (config validation) and the recognisers disagree");
    }

    #[test]
    fn look_alikes_are_not_pii() {
        for benign in [
            "order 123456789 shipped",
            "uuid 123e4567-e89b-12d3-a456-426614174000",
            "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "version 1.2.3.4 released",
            "see section 4.2.1 of the spec",
            "let x = 10.0 * 3;",
        ] {
            assert!(kinds(benign).is_empty(), "{benign}: {:?}", detect(benign));
        }
    }

    #[test]
    fn numbers_and_dates_as_records_and_forms_write_them() {
        // Phones: a US number with its trunk 1, dotted, and national numbers written
        // without a trunk prefix; amounts and versions stay.
        for text in ["tenant mobile 1-312-555-2368", "reach Ana at 312.482.9917", "Ana Ruiz;ana@x.es;612 45 78 90;Madrid", "Luca;349 218 5567;Roma"] {
            assert!(kinds(text).contains(&"phone_number"), "{text}: {:?}", detect(text));
        }
        for text in ["the budget is 650 000 000 euros", "build 10.0.19041.1234", "release 2.17.0.11 today"] {
            assert!(!kinds(text).contains(&"phone_number"), "{text}: {:?}", detect(text));
        }
        // A full date with a birth year in the same row as someone's identifiers.
        assert!(kinds("Jo Bloggs;14-02-1961;AB 12 34 56 C;jo@example.org").contains(&"date_of_birth"));
        assert!(kinds("Jo Bloggs, jo@example.org, 1-312-555-2368, July 4, 1970").contains(&"date_of_birth"));
        // Not: a recent date, or a date in a row with no one's identifiers.
        assert!(!kinds("invoice of 12/03/2024 sent to jo@example.org").contains(&"date_of_birth"));
        assert!(!kinds("the plant opened on 14-02-1961 in Leeds").contains(&"date_of_birth"));
        assert!(!kinds("jo@example.org\n\nThe plant opened on 14-02-1961.").contains(&"date_of_birth"));
        // Birth words as forms write them; licence numbers a few words after their name.
        assert_eq!(kinds("Mme Durand, né(e) le 06.07.1985"), ["date_of_birth"]);
        assert_eq!(kinds("Conduttore: Rossi, nato/a il 04/08/1999"), ["date_of_birth"]);
        assert_eq!(kinds("the DMV says license # 4481920375 is expired"), ["drivers_license"]);
        assert_eq!(kinds("mi chiedono la patente: sulla tessera al punto 5 c'è scritto U1A2345678Z"), ["drivers_license"]);
        assert_eq!(kinds("nouvelle adresse, permis 120375910042"), ["drivers_license"]);
        // The longest and shortest US formats, and the licence's names in Spanish and German.
        assert_eq!(kinds("driver's license number W123456789012345678 on file"), ["drivers_license"]);
        assert_eq!(kinds("driver's license: 482913"), ["drivers_license"]);
        assert_eq!(kinds("driver's license: A1B2C"), ["drivers_license"]);
        // Licences of software, encodings, forms and trucks are not driving licences.
        assert!(kinds("Package: foo\nLicense: GPL-3\nEncoding: UTF-8").is_empty());
        assert!(kinds("License: LGPL-2\nCharset: UTF-16 or ISO-8859-1").is_empty());
        assert_eq!(kinds("Name: J. Doe\nLicense: N55101775"), ["drivers_license"]);
        assert!(kinds("the DMV form MV-82 and my F-150").is_empty());
        assert!(kinds("<wsdl:types> encoding UTF-8").is_empty());
        assert_eq!(kinds("DL: X1234567"), ["drivers_license"]);
        // A context word must start a word: "setting" holds no "tin", "wsdl" no "dl".
        assert_eq!(kinds("TIN 86095742719"), ["de_tax_id"]);
        assert!(kinds("after setting 86095742719").is_empty());
        assert_eq!(kinds("el permiso de conducción número 4KL29X7"), ["drivers_license"]);
        assert_eq!(kinds("Nummer der Fahrerlaubnis: J0412345678"), ["drivers_license"]);
        assert!(kinds("driver's license renewed in 2024").is_empty());
        // A DVLA number needs no word before it; its shape is not a word's.
        assert_eq!(kinds("renewal form: MORGA753116SM9IJ, expires 2031"), ["drivers_license"]);
        assert_eq!(kinds("ref JONES 610150 AB9CD"), ["drivers_license"]);
        assert!(kinds("ORDER1234567890AB").is_empty());
    }

    #[test]
    fn operators_tag_mask_hash_keep() {
        let env = PiiEnv {
            pii_operators: crate::config::values::EntityOperators(
                [
                    ("email_address".to_string(), PiiOperator::Mask),
                    ("us_ssn".to_string(), PiiOperator::Hash),
                    ("ip_address".to_string(), PiiOperator::Keep),
                ]
                .into(),
            ),
            ..PiiEnv::default()
        };
        let a = PiiAuditor::new(env, [1; 32], None);
        let mut s = Subject::new([(Some("user".into()), "me a@b.co ssn 123-45-6789 ip 10.1.2.3 tel +1 415 555 0100".to_string())]);
        let v = a.audit(Stage::PreRequest, &s, std::time::Instant::now()).unwrap();
        assert_eq!(v.outcome, Outcome::Redact);
        assert_eq!(v.findings.len(), 4);
        s.apply(&v.redactions);
        let out = &s.segments[0].original;
        assert!(out.starts_with("me ****** ssn <US_SSN:"), "{out}");
        assert!(out.contains("ip 10.1.2.3") && out.ends_with("tel <PHONE_NUMBER>"), "{out}");
    }
}
