//! `pipeline-gateway apikey new|hash`: making keys without a running manager.
//!
//! `new` prints a fresh key (from the OS CSPRNG) on the first line and, after a blank line,
//! the `[[auth.api_keys]]` entry that accepts it — the key itself is never written anywhere
//! else. `hash` reads one key from standard input (a trailing newline is ignored) and prints
//! its stored form, so a key issued by Feldera can be carried over; input that is not
//! `apikey:` + 128 alphanumerics is still hashed, with a warning on standard error.

use std::io::Read;

use super::apikey;
use super::Role;

/// The key and the configuration entry printed by `apikey new`.
pub fn new_key(name: &str, role: Role, tenant: Option<&str>) -> (String, String) {
    let key = apikey::generate();
    let mut entry = format!(
        "[[auth.api_keys]]\nname = {}\nsha256 = \"{}\"\nrole = \"{role}\"\n",
        toml_string(name),
        apikey::hash(&key)
    );
    if let Some(tenant) = tenant {
        entry.push_str(&format!("tenant = {}\n", toml_string(tenant)));
    }
    (key, entry)
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Reads a key from `input` and returns its hash, and a warning if it is not well formed.
pub fn hash_input(input: &mut impl Read) -> Result<(String, Option<&'static str>), String> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    let key = text.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        return Err("no key on standard input".into());
    }
    let warning = (!apikey::is_well_formed(key))
        .then_some("warning: this is not a Feldera API key (apikey: + 128 alphanumerics)");
    Ok((apikey::hash(key), warning))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::auth::ApiKeysFile;

    #[test]
    fn new_key_entry_parses_and_matches_the_key() {
        let (key, entry) = new_key("ci \"bot\"", Role::Write, Some("acme"));
        let file: ApiKeysFile =
            toml::from_str(&entry.replace("[[auth.api_keys]]", "[[api_keys]]")).unwrap();
        assert_eq!(file.api_keys[0].name, "ci \"bot\"");
        assert_eq!(file.api_keys[0].sha256.to_string(), apikey::hash(&key));
        assert_eq!(file.api_keys[0].tenant.as_deref(), Some("acme"));
    }

    #[test]
    fn hash_ignores_the_trailing_newline_and_warns_on_odd_input() {
        let key = apikey::generate();
        let (hash, warning) = hash_input(&mut format!("{key}\n").as_bytes()).unwrap();
        assert_eq!(hash, apikey::hash(&key));
        assert!(warning.is_none());
        let (_, warning) = hash_input(&mut "hello\r\n".as_bytes()).unwrap();
        assert!(warning.is_some());
        assert!(hash_input(&mut "\n".as_bytes()).is_err());
    }
}
