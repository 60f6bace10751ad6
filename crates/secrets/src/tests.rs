//! Tests for the keyring, envelopes and the key file.
#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::*;

const PLAINTEXT: &[u8] = b"ghp_plaintext-credential";

fn aad() -> Aad {
    Aad::new("tenant-1", "conn-1")
}

fn id(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

fn key_json(current: &str, keys: &[(&str, &[u8])]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(id, bytes)| format!("\"{id}\": \"{}\"", STANDARD.encode(bytes)))
        .collect();
    format!(
        "{{\"current\": \"{current}\", \"keys\": {{{}}}}}",
        keys.join(", ")
    )
}

/// Re-encodes `envelope` with one part replaced by `edit` applied to its decoded bytes.
fn tamper(envelope: &Envelope, part: usize, edit: impl Fn(&mut Vec<u8>)) -> Envelope {
    let encoded = envelope.encode();
    let mut parts: Vec<String> = encoded.split('.').map(str::to_owned).collect();
    let mut bytes = URL_SAFE_NO_PAD.decode(&parts[part]).unwrap();
    edit(&mut bytes);
    parts[part] = URL_SAFE_NO_PAD.encode(bytes);
    Envelope::decode(&parts.join(".")).unwrap()
}

fn message(result: Result<impl std::fmt::Debug, SecretsError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn round_trip() {
    let keyring = Keyring::generate().unwrap();
    let envelope = keyring.encrypt(&aad(), PLAINTEXT).unwrap();
    let decoded = Envelope::decode(&envelope.encode()).unwrap();
    assert_eq!(decoded, envelope);
    assert_eq!(
        keyring.decrypt(&aad(), &decoded).unwrap().expose(),
        PLAINTEXT
    );
    assert!(envelope.encode().starts_with("v1.k1."));
}

#[test]
fn same_plaintext_encrypts_differently() {
    let keyring = Keyring::generate().unwrap();
    let a = keyring.encrypt(&aad(), PLAINTEXT).unwrap().encode();
    let b = keyring.encrypt(&aad(), PLAINTEXT).unwrap().encode();
    assert_ne!(a, b);
    assert_ne!(
        a.split('.').nth(2),
        b.split('.').nth(2),
        "nonces must differ"
    );
}

#[test]
fn tampered_ciphertext_fails() {
    let keyring = Keyring::generate().unwrap();
    let envelope = keyring.encrypt(&aad(), PLAINTEXT).unwrap();
    for at in [0, PLAINTEXT.len() - 1, PLAINTEXT.len() + 5] {
        let tampered = tamper(&envelope, 3, |b| b[at] ^= 1);
        assert!(matches!(
            keyring.decrypt(&aad(), &tampered),
            Err(SecretsError::Decrypt)
        ));
    }
    let truncated = tamper(&envelope, 3, |b| b.truncate(b.len() - 1));
    assert!(keyring.decrypt(&aad(), &truncated).is_err());
}

#[test]
fn tampered_nonce_fails() {
    let keyring = Keyring::generate().unwrap();
    let envelope = keyring.encrypt(&aad(), PLAINTEXT).unwrap();
    let tampered = tamper(&envelope, 2, |b| b[11] ^= 0x80);
    assert!(matches!(
        keyring.decrypt(&aad(), &tampered),
        Err(SecretsError::Decrypt)
    ));
}

#[test]
fn wrong_tenant_or_connection_fails() {
    let keyring = Keyring::generate().unwrap();
    let envelope = keyring.encrypt(&aad(), PLAINTEXT).unwrap();
    for wrong in [
        Aad::new("tenant-2", "conn-1"),
        Aad::new("tenant-1", "conn-2"),
    ] {
        assert!(matches!(
            keyring.decrypt(&wrong, &envelope),
            Err(SecretsError::Decrypt)
        ));
    }
}

#[test]
fn aad_encoding_is_unambiguous() {
    let (ab_c, a_bc) = (Aad::new("ab", "c"), Aad::new("a", "bc"));
    assert_ne!(ab_c.encode(), a_bc.encode());
    let keyring = Keyring::generate().unwrap();
    let envelope = keyring.encrypt(&ab_c, PLAINTEXT).unwrap();
    assert!(keyring.decrypt(&a_bc, &envelope).is_err());
    assert!(keyring.decrypt(&ab_c, &envelope).is_ok());
}

#[test]
fn rotation_keeps_old_envelopes_readable_and_reencrypt_moves_them() {
    let mut keyring = Keyring::generate().unwrap();
    let old = keyring.encrypt(&aad(), PLAINTEXT).unwrap();
    assert_eq!(old.key_id(), &id("k1"));

    assert_eq!(keyring.rotate().unwrap(), id("k2"));
    assert_eq!(keyring.current(), &id("k2"));
    assert_eq!(keyring.decrypt(&aad(), &old).unwrap().expose(), PLAINTEXT);
    let new = keyring.encrypt(&aad(), PLAINTEXT).unwrap();
    assert_eq!(new.key_id(), &id("k2"));

    let moved = keyring.reencrypt(&aad(), &old).unwrap().unwrap();
    assert_eq!(moved.key_id(), &id("k2"));
    assert_eq!(keyring.decrypt(&aad(), &moved).unwrap().expose(), PLAINTEXT);
    assert_eq!(keyring.reencrypt(&aad(), &new).unwrap(), None);

    // Re-encryption checks the associated data too: it cannot launder a row swap.
    assert!(
        keyring
            .reencrypt(&Aad::new("other", "conn-1"), &old)
            .is_err()
    );
}

#[test]
fn retired_key_fails_naming_it() {
    let mut keyring = Keyring::generate().unwrap();
    let old = keyring.encrypt(&aad(), PLAINTEXT).unwrap();
    keyring.rotate().unwrap();
    keyring.retire(&id("k1")).unwrap();
    let err = keyring.decrypt(&aad(), &old).unwrap_err();
    assert!(matches!(&err, SecretsError::RetiredKey(k) if *k == id("k1")));
    assert!(err.to_string().contains("k1"), "{err}");
    assert_eq!(keyring.key_ids().collect::<Vec<_>>(), [&id("k2")]);
    keyring.retire(&id("k1")).unwrap(); // idempotent
}

#[test]
fn retiring_the_current_key_is_refused() {
    let mut keyring = Keyring::generate().unwrap();
    assert!(matches!(
        keyring.retire(&id("k1")),
        Err(SecretsError::RetireCurrent(_))
    ));
    let envelope = keyring.encrypt(&aad(), PLAINTEXT).unwrap();
    assert!(keyring.decrypt(&aad(), &envelope).is_ok());
    assert!(matches!(
        keyring.retire(&id("k7")),
        Err(SecretsError::UnknownKey(_))
    ));
}

#[test]
fn rotate_never_reuses_a_retired_id() {
    let text = key_json("k1", &[("k1", &[7; 32]), ("k2", &[9; 32])]);
    let mut keyring = Keyring::from_json(&text).unwrap();
    keyring.retire(&id("k2")).unwrap();
    assert_eq!(keyring.rotate().unwrap(), id("k3"));
}

#[test]
fn unknown_key_id_is_named() {
    let keyring = Keyring::generate().unwrap();
    let envelope = keyring.encrypt(&aad(), PLAINTEXT).unwrap();
    let foreign = Envelope::decode(&envelope.encode().replacen("v1.k1.", "v1.k9.", 1)).unwrap();
    let err = keyring.decrypt(&aad(), &foreign).unwrap_err();
    assert!(matches!(err, SecretsError::UnknownKey(_)));
    assert!(err.to_string().contains("k9"), "{err}");
}

#[test]
fn malformed_envelopes_give_clear_errors() {
    let keyring = Keyring::generate().unwrap();
    let good = keyring.encrypt(&aad(), PLAINTEXT).unwrap().encode();
    let parts: Vec<&str> = good.split('.').collect();
    let nonce = parts[2];
    let tag_only = URL_SAFE_NO_PAD.encode([0u8; 15]);
    let cases = [
        ("", "four dot-separated parts"),
        ("v1.k1.abc", "four dot-separated parts"),
        (&format!("{good}.extra"), "four dot-separated parts"),
        (&good.replacen("v1.", "v2.", 1), "unsupported version"),
        (&format!("v1.k/1.{nonce}.{}", parts[3]), "invalid key id"),
        (
            &format!("v1.k1.{nonce}!.{}", parts[3]),
            "nonce is not base64url",
        ),
        (&format!("v1.k1.AAAA.{}", parts[3]), "nonce is not 12 bytes"),
        (
            &format!("v1.k1.{nonce}.{}*", parts[3]),
            "ciphertext is not base64url",
        ),
        (
            &format!("v1.k1.{nonce}.{tag_only}"),
            "shorter than its 16-byte tag",
        ),
    ];
    for (input, expected) in cases {
        let err = Envelope::decode(input).unwrap_err();
        assert!(matches!(err, SecretsError::MalformedEnvelope(_)));
        assert!(err.to_string().contains(expected), "{input:?}: {err}");
    }
}

#[test]
fn empty_plaintext_round_trips() {
    let keyring = Keyring::generate().unwrap();
    let envelope = Envelope::decode(&keyring.encrypt(&aad(), b"").unwrap().encode()).unwrap();
    assert!(
        keyring
            .decrypt(&aad(), &envelope)
            .unwrap()
            .expose()
            .is_empty()
    );
}

#[test]
fn keyring_debug_shows_ids_and_no_key_bytes() {
    let key = [0xA5u8; 32];
    let keyring = Keyring::from_json(&key_json("k1", &[("k1", &key)])).unwrap();
    let debug = format!("{keyring:?}");
    assert!(debug.contains("k1"), "{debug}");
    for form in [
        STANDARD.encode(key),
        URL_SAFE_NO_PAD.encode(key),
        hex::encode(key),
        "165".to_owned(), // 0xA5 as `{:?}` of a byte array would print it
    ] {
        assert!(!debug.contains(&form), "{debug} contains {form}");
    }
}

#[test]
fn key_file_json_round_trips() {
    let mut keyring = Keyring::generate().unwrap();
    let old = keyring.encrypt(&aad(), PLAINTEXT).unwrap();
    keyring.rotate().unwrap();
    keyring.rotate().unwrap();
    keyring.retire(&id("k2")).unwrap();

    let loaded = Keyring::from_json(&keyring.to_json()).unwrap();
    assert_eq!(loaded.current(), &id("k3"));
    assert_eq!(loaded.to_json(), keyring.to_json());
    assert_eq!(loaded.decrypt(&aad(), &old).unwrap().expose(), PLAINTEXT);
    let json: serde_json::Value = serde_json::from_str(&keyring.to_json()).unwrap();
    assert_eq!(json["retired"], serde_json::json!(["k2"]));
}

#[test]
fn from_json_rejects_bad_keys_and_a_current_not_among_them() {
    let key = [0x42u8; 32];
    let cases = [
        (key_json("k1", &[("k1", &key[..31])]), "k1 is 31 bytes"),
        (key_json("k1", &[("k1", &[1; 33])]), "k1 is 33 bytes"),
        (
            key_json("k2", &[("k1", &key)]),
            "current key k2 is not among",
        ),
        (
            r#"{"current": "k1", "keys": {"k1": "not base64!"}}"#.to_owned(),
            "k1 is not valid base64",
        ),
        (
            r#"{"current": "k1", "keys": {"k/1": "AAAA"}}"#.to_owned(),
            "a key id is not",
        ),
        (
            r#"{"current": "k1", "keys": {}, "extra": 1}"#.to_owned(),
            "does not have the shape",
        ),
        ("{\"current\": ".to_owned(), "is not valid JSON"),
    ];
    for (text, expected) in cases {
        let err = message(Keyring::from_json(&text));
        assert!(err.contains(expected), "{text}: {err}");
    }
    let both = format!(
        r#"{{"current": "k1", "keys": {{"k1": "{}"}}, "retired": ["k1"]}}"#,
        STANDARD.encode(key)
    );
    assert!(message(Keyring::from_json(&both)).contains("both present and retired"));
}

#[test]
fn key_file_errors_never_quote_the_file() {
    // A key where a value of the wrong type belongs, and a key where an id belongs.
    let secret_looking = "c2VjcmV0LWtleS1ieXRlcy10aGF0LW11c3Qtbm90LWxlYWs=";
    for text in [
        format!(r#"{{"current": "k1", "keys": {{"k1": ["{secret_looking}"]}}}}"#),
        format!(r#"{{"current": "k1", "keys": {{"{secret_looking}": "k1"}}}}"#),
        format!(r#"{{"current": "k1", "keys": {{"k1": "{secret_looking}x"}}}}"#),
        format!(r#"{{"current": 1, "keys": {{"k1": "{secret_looking}"}}}}"#),
    ] {
        let err = message(Keyring::from_json(&text));
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }
}

#[test]
fn all_zero_and_passphrase_keys_are_weak_and_generated_ones_are_not() {
    let zero = Keyring::from_json(&key_json("k1", &[("k1", &[0; 32])])).unwrap();
    assert!(zero.is_default_or_weak());
    assert!(matches!(zero.ensure_strong(), Err(SecretsError::WeakKey(k)) if k == id("k1")));

    let passphrase = b"correct horse battery staple 123";
    let text = Keyring::from_json(&key_json("k1", &[("k1", passphrase)])).unwrap();
    assert!(text.is_default_or_weak());

    let mut keyring = Keyring::generate().unwrap();
    assert!(!keyring.is_default_or_weak());
    keyring.rotate().unwrap();
    keyring.ensure_strong().unwrap();

    // A weak key that is no longer current still counts: it can still forge envelopes.
    let strong = *keyring.keys[&id("k2")].bytes();
    let mixed = key_json("k2", &[("k1", &[0; 32]), ("k2", &strong)]);
    assert!(Keyring::from_json(&mixed).unwrap().is_default_or_weak());
}

#[cfg(unix)]
#[test]
fn load_or_create_creates_a_0600_file_then_loads_it() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("keys.json");
    let (created, was_created) = Keyring::load_or_create(&path).unwrap();
    assert!(was_created);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let envelope = created.encrypt(&aad(), PLAINTEXT).unwrap();

    let (loaded, was_created) = Keyring::load_or_create(&path).unwrap();
    assert!(!was_created);
    assert_eq!(loaded.to_json(), created.to_json());
    assert_eq!(
        loaded.decrypt(&aad(), &envelope).unwrap().expose(),
        PLAINTEXT
    );

    // No temporary files left beside it.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keys.json"]);
}

#[cfg(unix)]
#[test]
fn save_replaces_the_file_keeping_it_0600() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let (mut keyring, _) = Keyring::load_or_create(&path).unwrap();
    keyring.rotate().unwrap();
    keyring.save(&path).unwrap();
    let loaded = Keyring::load(&path).unwrap();
    assert_eq!(loaded.current(), &id("k2"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

#[test]
fn load_requires_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    assert!(matches!(
        Keyring::load(&path),
        Err(SecretsError::MissingKeyFile { .. })
    ));
    assert!(!path.exists(), "load must never create a key file");
}
