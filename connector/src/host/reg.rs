//! `.reg` files (the `Windows Registry Editor Version 5.00` export format),
//! parsed without I/O: keys, values (`dword:`, `qword:`, strings, `hex:`
//! and `hex(N):` with `\` continuations), deletions (`[-KEY]`, `"v"=-`),
//! `;` comments, and UTF-16 LE files with a BOM (what regedit writes).
//! Anything else is a [`RegError`] with the line number.

use std::collections::BTreeMap;

/// A registry value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegValue {
    Dword(u32),
    Qword(u64),
    String(String),
    /// `hex:` (kind 3) or `hex(N):` bytes.
    Binary {
        kind: u32,
        bytes: Vec<u8>,
    },
    /// `"name"=-`: delete the value.
    Delete,
}

/// Why a `.reg` text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RegError {
    pub line: usize,
    pub message: String,
}

/// A parsed `.reg` file. Key paths and value names are compared
/// case-insensitively, as the registry does; they are stored lowercased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegFile {
    pub keys: BTreeMap<String, BTreeMap<String, RegValue>>,
    pub deleted_keys: Vec<String>,
}

impl RegFile {
    /// Parses `.reg` bytes (UTF-8, or UTF-16 LE/BE with a BOM).
    pub fn parse_bytes(bytes: &[u8]) -> Result<RegFile, RegError> {
        RegFile::parse(&decode(bytes)?)
    }

    /// The value `name` under `key` (full path, any case).
    pub fn value(&self, key: &str, name: &str) -> Option<&RegValue> {
        self.keys.get(&key.to_ascii_lowercase())?.get(&name.to_ascii_lowercase())
    }

    /// A DWORD value.
    pub fn dword(&self, key: &str, name: &str) -> Option<u32> {
        match self.value(key, name)? {
            RegValue::Dword(v) => Some(*v),
            _ => None,
        }
    }

    /// Parses `.reg` text.
    pub fn parse(text: &str) -> Result<RegFile, RegError> {
        let err = |line: usize, message: String| RegError { line, message };
        let mut file = RegFile::default();
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
        let header = loop {
            match lines.next() {
                Some((_, l)) if l.trim().is_empty() => continue,
                Some((n, l)) => break (n, l.trim().trim_start_matches('\u{feff}')),
                None => return Err(err(1, "empty file: expected \"Windows Registry Editor Version 5.00\"".into())),
            }
        };
        if header.1 != "Windows Registry Editor Version 5.00" && header.1 != "REGEDIT4" {
            return Err(err(
                header.0,
                format!("expected \"Windows Registry Editor Version 5.00\", found {:?}", header.1),
            ));
        }
        let mut current: Option<String> = None;
        while let Some((n, raw)) = lines.next() {
            let mut line = raw.trim().to_string();
            if line.is_empty() || line.starts_with(';') {
                continue;
            }
            // `\` at the end continues a hex list on the next line.
            while line.ends_with('\\') && line.contains("=hex") {
                line.pop();
                match lines.next() {
                    Some((_, more)) => line.push_str(more.trim()),
                    None => return Err(err(n, "a hex value continues past the end of the file".into())),
                }
            }
            if let Some(rest) = line.strip_prefix('[') {
                let path =
                    rest.strip_suffix(']').ok_or_else(|| err(n, format!("key line {line:?} lacks its closing ']'")))?;
                if let Some(deleted) = path.strip_prefix('-') {
                    file.deleted_keys.push(check_key(deleted, n)?);
                    current = None;
                } else {
                    let key = check_key(path, n)?;
                    file.keys.entry(key.clone()).or_default();
                    current = Some(key);
                }
                continue;
            }
            let Some(key) = &current else {
                return Err(err(n, format!("value {line:?} comes before any [KEY] line")));
            };
            let (name, value) = parse_value_line(&line).map_err(|m| err(n, m))?;
            if let Some(values) = file.keys.get_mut(key) {
                values.insert(name.to_ascii_lowercase(), value);
            }
        }
        Ok(file)
    }
}

const HIVES: [&str; 5] =
    ["HKEY_LOCAL_MACHINE", "HKEY_CURRENT_USER", "HKEY_CLASSES_ROOT", "HKEY_USERS", "HKEY_CURRENT_CONFIG"];

fn check_key(path: &str, line: usize) -> Result<String, RegError> {
    let hive = path.split('\\').next().unwrap_or_default();
    if !HIVES.iter().any(|h| h.eq_ignore_ascii_case(hive)) {
        return Err(RegError {
            line,
            message: format!("key {path:?} does not start with a registry hive (HKEY_LOCAL_MACHINE, ...)"),
        });
    }
    if path.split('\\').any(str::is_empty) {
        return Err(RegError { line, message: format!("key {path:?} has an empty component") });
    }
    Ok(path.to_ascii_lowercase())
}

/// `"name"=value` or `@=value`.
fn parse_value_line(line: &str) -> Result<(String, RegValue), String> {
    let (name, rest) = if let Some(rest) = line.strip_prefix('@') {
        (String::new(), rest)
    } else if line.starts_with('"') {
        let (name, used) = quoted(line).ok_or_else(|| format!("value name in {line:?} is not closed by '\"'"))?;
        (name, &line[used..])
    } else {
        return Err(format!("expected \"name\"=value or @=value, found {line:?}"));
    };
    let data =
        rest.trim_start().strip_prefix('=').ok_or_else(|| format!("expected '=' after the value name in {line:?}"))?;
    let data = data.trim();
    let value = if data == "-" {
        RegValue::Delete
    } else if data.starts_with('"') {
        let (s, used) = quoted(data).ok_or_else(|| format!("string value {data:?} is not closed by '\"'"))?;
        if !data[used..].trim().is_empty() {
            return Err(format!("unexpected text after the string value: {:?}", &data[used..]));
        }
        RegValue::String(s)
    } else if let Some(hex) = data.strip_prefix("dword:") {
        if hex.len() != 8 {
            return Err(format!("dword:{hex} must have exactly 8 hex digits"));
        }
        RegValue::Dword(u32::from_str_radix(hex, 16).map_err(|_| format!("dword:{hex} is not hexadecimal"))?)
    } else if let Some(hex) = data.strip_prefix("qword:") {
        RegValue::Qword(u64::from_str_radix(hex, 16).map_err(|_| format!("qword:{hex} is not hexadecimal"))?)
    } else if let Some(rest) = data.strip_prefix("hex") {
        let (kind, list) = match rest.strip_prefix('(') {
            Some(r) => {
                let (k, l) = r.split_once("):").ok_or_else(|| format!("expected hex(N): in {data:?}"))?;
                (u32::from_str_radix(k, 16).map_err(|_| format!("hex({k}) is not a hex type number"))?, l)
            }
            None => (3, rest.strip_prefix(':').ok_or_else(|| format!("expected hex: in {data:?}"))?),
        };
        let bytes = list
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(|b| u8::from_str_radix(b, 16).map_err(|_| format!("{b:?} is not a hex byte")))
            .collect::<Result<Vec<u8>, _>>()?;
        RegValue::Binary { kind, bytes }
    } else {
        return Err(format!(
            "unknown value type in {data:?} (expected \"string\", dword:, qword:, hex:, hex(N): or -)"
        ));
    };
    Ok((name, value))
}

/// A `"..."` string at the start of `s` with `\\` and `\"` escapes; returns
/// it and the bytes used.
fn quoted(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, i + 1)),
            c => out.push(c),
        }
    }
    None
}

/// UTF-8, or UTF-16 with a byte-order mark, to text.
pub fn decode(bytes: &[u8]) -> Result<String, RegError> {
    let utf16 = |le: bool| -> Result<String, RegError> {
        let body = &bytes[2..];
        if !body.len().is_multiple_of(2) {
            return Err(RegError { line: 0, message: "UTF-16 file with an odd number of bytes (truncated?)".into() });
        }
        let units = body.chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|e| RegError { line: 0, message: format!("invalid UTF-16: {e}") })
    };
    match bytes {
        [0xFF, 0xFE, ..] => utf16(true),
        [0xFE, 0xFF, ..] => utf16(false),
        _ => String::from_utf8(bytes.to_vec())
            .map_err(|e| RegError { line: 0, message: format!("neither UTF-8 nor UTF-16 with a BOM: {e}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's own `.reg` text, as printed in the seed.
    use super::super::SPEC_TLS12_REG as SPEC_TLS12;

    #[test]
    fn the_spec_text_parses() {
        let f = RegFile::parse(SPEC_TLS12).unwrap();
        let client =
            r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\TLS 1.2\Client";
        assert_eq!(f.dword(client, "Enabled"), Some(1));
        assert_eq!(f.dword(&client.to_uppercase(), "enabled"), Some(1));
        assert_eq!(
            f.dword(r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\.NETFramework\v4.0.30319", "SchUseStrongCrypto"),
            Some(1)
        );
    }

    #[test]
    fn utf16_with_bom_parses_like_utf8() {
        let mut bytes = vec![0xFF, 0xFE];
        for u in SPEC_TLS12.replace('\n', "\r\n").encode_utf16() {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(RegFile::parse_bytes(&bytes).unwrap(), RegFile::parse(SPEC_TLS12).unwrap());
    }

    #[test]
    fn strings_hex_continuations_deletions_and_comments() {
        let f = RegFile::parse(
            "Windows Registry Editor Version 5.00\n; a comment\n[HKEY_CURRENT_USER\\A]\n@=\"d\"\n\"s\"=\"a \\\"q\\\" \\\\ b\"\n\"h\"=hex:01,02,\\\n  03\n\"m\"=hex(7):41,00\n\"x\"=-\n[-HKEY_CURRENT_USER\\B]\n",
        )
        .unwrap();
        let k = "HKEY_CURRENT_USER\\A";
        assert_eq!(f.value(k, ""), Some(&RegValue::String("d".into())));
        assert_eq!(f.value(k, "s"), Some(&RegValue::String("a \"q\" \\ b".into())));
        assert_eq!(f.value(k, "h"), Some(&RegValue::Binary { kind: 3, bytes: vec![1, 2, 3] }));
        assert_eq!(f.value(k, "m"), Some(&RegValue::Binary { kind: 7, bytes: vec![0x41, 0] }));
        assert_eq!(f.value(k, "x"), Some(&RegValue::Delete));
        assert_eq!(f.deleted_keys, vec!["hkey_current_user\\b".to_string()]);
    }

    #[test]
    fn malformed_text_names_the_line() {
        let bad = |t: &str| RegFile::parse(t).unwrap_err();
        assert_eq!(bad("hello").line, 1);
        assert!(bad("hello").message.contains("Windows Registry Editor"));
        let e = bad("Windows Registry Editor Version 5.00\n\"v\"=dword:00000001\n");
        assert_eq!((e.line, e.message.contains("before any [KEY]")), (2, true));
        let e = bad("Windows Registry Editor Version 5.00\n[HKLM\\X]\n");
        assert!(e.message.contains("hive"), "{e}");
        let e = bad("Windows Registry Editor Version 5.00\n[HKEY_LOCAL_MACHINE\\X]\n\"v\"=dword:1\n");
        assert_eq!((e.line, e.message.contains("8 hex digits")), (3, true));
        let e = bad("Windows Registry Editor Version 5.00\n[HKEY_LOCAL_MACHINE\\X\n");
        assert!(e.message.contains("closing"), "{e}");
        let e = bad("Windows Registry Editor Version 5.00\n[HKEY_LOCAL_MACHINE\\X]\n\"v\"=float:1\n");
        assert!(e.message.contains("unknown value type"), "{e}");
        assert!(RegFile::parse_bytes(&[0xFF, 0xFE, 0x41]).is_err());
    }
}
