//! Passwords in tables: a password column in a Markdown, CSV or tab-separated table
//! ("| host | user | password |" over rows of accounts, an exported "username,password"
//! file), and a key/value table's password row ("| Password | S3cret! |").
//!
//! A regex reads a line; a column's meaning comes from the header row above, so this
//! reads the table's shape instead. Only the built-in rule set does this (an operator's
//! gitleaks file has no way to ask for it).

/// Whether the text names a password at all (in any case), before the table is read.
pub(super) fn mentions_password(text: &str) -> bool {
    static WORDS: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>> = std::sync::OnceLock::new();
    WORDS
        .get_or_init(|| {
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(["pass", "pw", "kennwort", "mot de passe", "mdp", "contrase", "wachtwoord", "senha"])
                .ok()
        })
        .as_ref()
        .is_none_or(|w| w.is_match(text))
}

/// Where the password cells are: byte ranges of their values in the text.
pub(super) fn password_cells(text: &str) -> Vec<(usize, usize)> {
    let lines = lines(text);
    let mut found = Vec::new();
    // The shape (delimiter, cells) of the line before: a line of the same shape under
    // it is a row of the same table, not a header.
    let mut above: Option<(char, usize)> = None;
    let mut i = 0;
    while i < lines.len() {
        let (start, line) = lines[i];
        let Some(delim) = delimiter(line) else {
            above = None;
            i += 1;
            continue;
        };
        let header = cells(line, start, delim);
        let shape = Some((delim, header.len()));
        let in_body = above == shape;
        above = if is_separator_row(line) { above } else { shape };
        if !is_header(line, &header) {
            i += 1;
            continue;
        }
        // A key/value row: the password word in the first cell, its value in the
        // second; the row is not a header.
        if let [name, v] = header[..] {
            if is_password_name(name.2, &header) {
                found.extend(value(v));
                i += 1;
                continue;
            }
        }
        let column = header.iter().position(|c| is_password_name(c.2, &header));
        let Some(column) = column.filter(|_| !in_body) else {
            i += 1;
            continue;
        };
        // The rows under a header: the same delimiter and number of cells, past a
        // Markdown separator row.
        let mut j = i + 1;
        while j < lines.len() {
            let (row_start, row) = lines[j];
            if is_separator_row(row) {
                j += 1;
                continue;
            }
            let row_cells = cells(row, row_start, delim);
            if delimiter(row) != Some(delim) || row_cells.len() != header.len() {
                break;
            }
            if let Some(v) = value(row_cells[column]) {
                found.push(v);
            }
            j += 1;
        }
        above = None;
        i = j.max(i + 1);
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// The text's lines with their byte offsets.
fn lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut at = 0;
    for line in text.split('\n') {
        out.push((at, line.strip_suffix('\r').unwrap_or(line)));
        at += line.len() + 1;
    }
    out
}

/// The delimiter of a table row: `|` (two cells or more), a tab, `;` or `,` (CSV).
fn delimiter(line: &str) -> Option<char> {
    let count = |c: char| line.chars().filter(|&x| x == c).count();
    if count('|') >= 1 {
        Some('|')
    } else if count('\t') >= 1 {
        Some('\t')
    } else if count(';') >= 1 && count(';') >= count(',') {
        Some(';')
    } else if count(',') >= 1 {
        Some(',')
    } else {
        None
    }
}

/// A row that can be a header or a key/value row: short names, not a sentence cut at
/// its commas ("Hi, my password, as you know, is ...").
fn is_header(line: &str, cells: &[(usize, usize, &str)]) -> bool {
    cells.len() >= 2
        && cells.iter().all(|c| c.2.len() <= 32 && c.2.split_whitespace().count() <= 3)
        && !line.contains(". ")
        && !line.contains('?')
}

/// A Markdown header separator ("|---|:---:|").
fn is_separator_row(line: &str) -> bool {
    let t = line.trim();
    t.contains('-') && t.chars().all(|c| matches!(c, '|' | '-' | ':' | ' ' | '\t' | '+'))
}

/// A row's cells as (start, end, trimmed text), splitting outside double quotes; a
/// Markdown row's outer pipes make no cells.
fn cells(line: &str, offset: usize, delim: char) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut cell_start = 0;
    for (k, c) in line.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == delim && !quoted {
            out.push((cell_start, k));
            cell_start = k + c.len_utf8();
        }
    }
    out.push((cell_start, line.len()));
    if delim == '|' {
        if out.first().is_some_and(|&(a, b)| line[a..b].trim().is_empty()) {
            out.remove(0);
        }
        if out.last().is_some_and(|&(a, b)| line[a..b].trim().is_empty()) {
            out.pop();
        }
    }
    out.into_iter()
        .map(|(a, b)| {
            let raw = &line[a..b];
            let lead = raw.len() - raw.trim_start().len();
            let t = raw.trim();
            (offset + a + lead, offset + a + lead + t.len(), t)
        })
        .collect()
}

/// A header cell naming a password: the word alone or ending the name ("password",
/// "Admin password", "db_password", "Passwort", "mot de passe"); not a password's hash,
/// policy or the like ("password hash", "password_changed_at"), nor a column about one
/// ("Reset password", "Last password change"). "pass" and "pw" alone are ski, boarding
/// and test passes too, so they count only beside a user's column.
fn is_password_name(cell: &str, header: &[(usize, usize, &str)]) -> bool {
    let name = bare(cell);
    const WORDS: [&str; 12] = ["password", "passwd", "pwd", "passphrase", "passwort", "kennwort", "mot de passe", "mdp", "contraseña", "contrasena", "wachtwoord", "senha"];
    const ABOUT: [&str; 8] = ["reset", "change", "forgot", "last", "expir", "new", "old", "confirm"];
    const USERS: [&str; 12] = ["user", "username", "user name", "login", "benutzer", "benutzername", "utilisateur", "usuario", "utente", "gebruiker", "account", "email"];
    if matches!(name.as_str(), "pass" | "pw") {
        return header.iter().any(|c| USERS.contains(&bare(c.2).as_str()));
    }
    WORDS.iter().any(|w| {
        name == *w
            || name.strip_suffix(w).is_some_and(|head| {
                head.ends_with([' ', '_', '-', '.'])
                    && head.len() <= 24
                    && head.chars().all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.'))
                    && !ABOUT.iter().any(|a| head.contains(a))
            })
    })
}

/// A cell's name, lower-cased, without emphasis, quotes and a trailing colon.
fn bare(cell: &str) -> String {
    cell.trim_matches(|c: char| matches!(c, '*' | '`' | '"' | '\'' | '_' | ' ' | ':')).to_lowercase()
}

/// A cell's value as a password's range, unless empty, masked, a placeholder, a
/// reference or a plain word.
fn value((start, end, text): (usize, usize, &str)) -> Option<(usize, usize)> {
    let (start, end, v) = match text.strip_prefix(['`', '"', '\'']).and_then(|t| t.strip_suffix(['`', '"', '\''])) {
        Some(inner) => (start + 1, end - 1, inner),
        None => (start, end, text),
    };
    let chars = v.chars().count();
    let placeholder = v.starts_with(['<', '$', '{', '%', '(', '[', '@', '-'])
        || v.contains(['[', ']', '(', ')', '"', '\'', '`'])
        || v.chars().all(|c| matches!(c, '*' | 'x' | 'X' | '-' | '.' | '•'))
        || v.chars().all(char::is_alphabetic)
        // A date, a time, a share: digits with separators ("2024-05-01", "87.5%").
        || (v.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | '%' | '/' | ':' | '+' | '-')) && !v.chars().all(|c| c.is_ascii_digit()))
        || is_identifier(v);
    (4..=127).contains(&chars).then_some(()).filter(|_| !placeholder && !v.contains(char::is_whitespace)).map(|_| (start, end))
}

/// A name in code or a column ("last_changed", "rotatedAt"), not a password.
fn is_identifier(v: &str) -> bool {
    let parts: Vec<&str> = v.split('_').collect();
    (parts.len() > 1 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase())))
        || (v.starts_with(|c: char| c.is_ascii_lowercase()) && v.chars().all(|c| c.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use super::password_cells;

    fn found(text: &str) -> Vec<&str> {
        password_cells(text).into_iter().map(|(a, b)| &text[a..b]).collect()
    }

    #[test]
    fn password_columns_and_rows_are_read() {
        assert_eq!(found("| username | password |\n|---|---|\n| admin | Maple77! |\n| ops | `Kiefer#884` |"), ["Maple77!", "Kiefer#884"]);
        assert_eq!(found("host,user,password,port\ndb1,app,Tr0ub4dor&3,5432\ndb2,app,\"Quartz#19,x\",5432\n"), ["Tr0ub4dor&3", "Quartz#19,x"]);
        assert_eq!(found("Benutzer;Passwort\nmeyer;Sommer2024!"), ["Sommer2024!"]);
        assert_eq!(found("name\tadmin password\nnas\tBirch_2017"), ["Birch_2017"]);
        assert_eq!(found("| Field | Value |\n|---|---|\n| Host | db.internal |\n| Password | Osprey#4410 |"), ["Osprey#4410"]);
        assert_eq!(found("| user | pass |\n|---|---|\n| admin | 48213579 |"), ["48213579"]);
    }

    #[test]
    fn tables_without_passwords_in_them_are_quiet() {
        for text in [
            "| user | password |\n|---|---|\n| admin | ******** |\n| ops | (in vault) |\n| ci | ${CI_PASSWORD} |\n| x | <set me> |",
            "| setting | password policy |\n|---|---|\n| min length | 12 |",
            "| column | type |\n|---|---|\n| password_hash | text |\n| password_changed_at | timestamp |",
            "id,password_hash\n1,$argon2id$v=19$m=65536",
            "| user | password |\n|---|---|\n| admin | unchanged |\n| ops | rotated |",
            "a, b, c\npassword, 12, 13",
            "Use a password manager, not a spreadsheet.",
            "password,last_changed\n",
            "argv = ['--password', '--stdin']",
            "| Property | Default |\n|---|---|\n| spring.datasource.password | |\n| spring.datasource.hikari.maximum-pool-size | 10 |\n| server.port | 8080 |",
            " column | type\n----------+------\n id | integer\n password | text\n address2 | text",
            "| Suite | Pass | Fail |\n|---|---|---|\n| unit | 1204 | 3 |\n| e2e | 87.5% | 2 |",
            "Boarding pass, LH4521-12A\nSki pass,2024/25",
            "| Name | Pass |\n|---|---|\n| Anna | C01X00T47 |",
            "| User | Last login | Reset password |\n|---|---|---|\n| anna | 2024-05-01 | 2024-04-02 |",
            "Hi, my password, as you know, is e.g. this, right\nthen, what, about, e.g.",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }
}
