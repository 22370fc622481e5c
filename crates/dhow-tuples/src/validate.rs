//! Name and id validation with the documented limits (SpiceDB's, so its data carries over).
//!
//! - type: `([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]`, at most 128 bytes;
//! - relation or permission: `[a-z][a-z0-9_]{1,62}[a-z0-9]` (3 to 64 bytes);
//! - object id: `[a-zA-Z0-9/_|\-=+]{1,1024}`, or `*` for a subject wildcard.

/// Longest type name, prefixes included.
pub const MAX_TYPE_LEN: usize = 128;
/// Longest relation or permission name.
pub const MAX_RELATION_LEN: usize = 64;
/// Longest object id.
pub const MAX_ID_LEN: usize = 1024;

fn is_segment(s: &str, max_len: usize) -> bool {
    let b = s.as_bytes();
    b.len() >= 3
        && b.len() <= max_len
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
        && b[b.len() - 1] != b'_'
}

/// Checks a type name; the error says what the limits are.
pub fn check_type(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_TYPE_LEN && {
        let parts: Vec<&str> = name.split('/').collect();
        let (last, prefixes) = parts.split_last().expect("split yields at least one part");
        prefixes.iter().all(|p| is_segment(p, 63)) && is_segment(last, 64)
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid type name `{}`: expected lowercase letters, digits and `_`, 3 to 64 \
             characters, starting with a letter and not ending with `_`, optionally prefixed \
             by `namespace/` (at most {MAX_TYPE_LEN} bytes in all)",
            truncate(name)
        ))
    }
}

/// Checks a relation or permission name.
pub fn check_relation(name: &str) -> Result<(), String> {
    if is_segment(name, MAX_RELATION_LEN) {
        Ok(())
    } else {
        Err(format!(
            "invalid relation name `{}`: expected lowercase letters, digits and `_`, 3 to \
             {MAX_RELATION_LEN} characters, starting with a letter and not ending with `_`",
            truncate(name)
        ))
    }
}

/// True for a character allowed in an object id.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '|' | '-' | '=' | '+')
}

/// Checks an object id (not the wildcard).
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty object id".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "object id `{}` is longer than {MAX_ID_LEN} bytes",
            truncate(id)
        ));
    }
    if let Some(c) = id.chars().find(|c| !is_id_char(*c)) {
        return Err(format!(
            "invalid object id `{}`: character {c:?} is not allowed (allowed: letters, digits \
             and / _ | - = +)",
            truncate(id)
        ));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        let t: String = s.chars().take(77).collect();
        format!("{t}...")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        assert!(check_type("user").is_ok());
        assert!(check_type("org/identity_team/user").is_ok());
        assert!(check_type("us").is_err());
        assert!(check_type("User").is_err());
        assert!(check_type("user_").is_err());
        assert!(check_type("/user").is_err());
        assert!(check_type(&"a".repeat(65)).is_err());
    }

    #[test]
    fn relations_and_ids() {
        assert!(check_relation("viewer").is_ok());
        assert!(check_relation("v").is_err());
        assert!(check_id("--=base64YWZz+/|").is_ok());
        assert!(check_id("a:b").is_err());
        assert!(check_id("").is_err());
        assert!(check_id(&"x".repeat(1025)).is_err());
    }
}
