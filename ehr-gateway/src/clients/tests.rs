use std::sync::Arc;

use secrecy::ExposeSecret;

use super::*;

fn tenant() -> TenantId {
    "145f4184-1b0b-41c7-ba24-b3c1291bfda1".parse().unwrap()
}

fn temp_store_path() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ehr-gw-store-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    (dir.join("clients.json"), dir)
}

#[test]
fn hash_round_trips_and_verifies() {
    let secret = SecretString::from("correct horse");
    let hash = SecretHash::new(&secret);
    assert!(hash.verify(b"correct horse"));
    assert!(!hash.verify(b"correct horsE"));
    assert!(!hash.verify(b""));
    let text = hash.to_string();
    assert!(text.starts_with("sha256$"), "{text}");
    assert!(!text.contains("correct"));
    let back: SecretHash = text.parse().unwrap();
    assert_eq!(back, hash);
    assert!(back.verify(b"correct horse"));
    // Same secret, different salt, different digest.
    assert_ne!(SecretHash::new(&secret).to_string(), text);
    for bad in [
        "",
        "md5$a$b",
        "sha256$!!$x",
        "sha256$AAAA$AAAA",
        "sha256$a$b$c",
    ] {
        assert!(bad.parse::<SecretHash>().is_err(), "{bad}");
    }
    assert_eq!(format!("{hash:?}"), "SecretHash(sha256)");
}

#[test]
fn generated_secrets_are_long_random_and_redacted() {
    let (a, ra) = generate_secret();
    let (b, _) = generate_secret();
    assert_eq!(a.expose_secret().len(), 43);
    assert_ne!(a.expose_secret(), b.expose_secret());
    assert!(ra.hash.verify(a.expose_secret().as_bytes()));
    let new = NewSecret {
        client_id: "c".into(),
        secret_id: ra.id,
        secret: a.clone(),
        created: ra.created,
    };
    assert!(!format!("{new:?}").contains(a.expose_secret()));
}

#[test]
fn client_ids_are_validated() {
    assert!(ClientRecord::new("patients-app_1.x").is_ok());
    for bad in ["", "a b", "a/b", "é", &"x".repeat(129)] {
        assert!(
            matches!(ClientRecord::new(bad), Err(Error::InvalidClientId { .. })),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn active_secrets_are_capped_and_revoked_ones_pruned() {
    let store = InMemoryClientStore::new();
    store
        .create_client("app", None, vec![tenant()])
        .await
        .unwrap();
    for _ in 1..MAX_ACTIVE_SECRETS {
        store.create_secret("app", None).await.unwrap();
    }
    assert!(matches!(
        store.create_secret("app", None).await,
        Err(Error::TooManySecrets {
            limit: MAX_ACTIVE_SECRETS,
            ..
        })
    ));
    // Rotate many times: revoke one, add one. The record stays bounded.
    for _ in 0..(MAX_REVOKED_KEPT * 2) {
        let client = store.client("app").await.unwrap().unwrap();
        let active = client
            .secrets
            .iter()
            .find(|s| s.is_active())
            .unwrap()
            .id
            .clone();
        store
            .revoke_secret_keeping_one("app", &active)
            .await
            .unwrap();
        store.create_secret("app", None).await.unwrap();
    }
    let client = store.client("app").await.unwrap().unwrap();
    let active = client.secrets.iter().filter(|s| s.is_active()).count();
    assert_eq!(active, MAX_ACTIVE_SECRETS);
    assert!(client.secrets.len() <= MAX_ACTIVE_SECRETS + MAX_REVOKED_KEPT + 1);
}

#[tokio::test]
async fn in_memory_store_rotates_and_revokes() {
    let store = InMemoryClientStore::new();
    let first = store
        .create_client("app", Some("Patients app".into()), vec![tenant()])
        .await
        .unwrap();
    assert!(matches!(
        store.create_client("app", None, vec![tenant()]).await,
        Err(Error::ClientExists { .. })
    ));
    // The only active secret cannot be revoked.
    assert!(matches!(
        store
            .revoke_secret_keeping_one("app", &first.secret_id)
            .await,
        Err(Error::LastActiveSecret { .. })
    ));
    let second = store.create_secret("app", None).await.unwrap();
    let client = store.client("app").await.unwrap().unwrap();
    assert_eq!(
        client
            .verify_secret(first.secret.expose_secret().as_bytes())
            .map(|s| &s.id),
        Some(&first.secret_id)
    );
    store
        .revoke_secret_keeping_one("app", &first.secret_id)
        .await
        .unwrap();
    let client = store.client("app").await.unwrap().unwrap();
    assert!(client
        .verify_secret(first.secret.expose_secret().as_bytes())
        .is_none());
    assert!(client
        .verify_secret(second.secret.expose_secret().as_bytes())
        .is_some());
    // Revoking again is idempotent; unknown ids are typed errors.
    let at = client.secrets[0].revoked.unwrap();
    store
        .revoke_secret("app", &first.secret_id, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        store.client("app").await.unwrap().unwrap().secrets[0].revoked,
        Some(at)
    );
    assert!(matches!(
        store.revoke_secret("app", "nope", Utc::now()).await,
        Err(Error::UnknownSecret { .. })
    ));
    assert!(matches!(
        store.create_secret("other", None).await,
        Err(Error::UnknownClient { .. })
    ));
    assert!(store.delete_client("app").await.unwrap());
    assert!(store.client("app").await.unwrap().is_none());
}

#[test]
fn tenant_restriction() {
    let t: TenantId = "145f4184-1b0b-41c7-ba24-b3c1291bfda1".parse().unwrap();
    let u: TenantId = "0a1b2c3d-0000-4000-8000-000000000001".parse().unwrap();
    let mut c = ClientRecord::new("app").unwrap();
    // No list, no tenant (fail closed).
    assert!(!c.allows_tenant(&t));
    c.tenants = vec![t];
    assert!(c.allows_tenant(&t));
    assert!(!c.allows_tenant(&u));
}

#[tokio::test]
async fn json_file_store_persists_digests_only() {
    let (path, dir) = temp_store_path();
    let store = JsonFileClientStore::new(&path);
    assert!(store.client("app").await.unwrap().is_none());
    let new = store
        .create_client("app", None, vec![tenant()])
        .await
        .unwrap();
    let text = tokio::fs::read_to_string(&path).await.unwrap();
    assert!(!text.contains(new.secret.expose_secret()));
    assert!(text.contains(&new.secret_id));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A second store on the same file sees the registration (shared with the CLI).
    let other = JsonFileClientStore::new(&path);
    let client = other.client("app").await.unwrap().unwrap();
    assert!(client
        .verify_secret(new.secret.expose_secret().as_bytes())
        .is_some());
    let rotated = other.create_secret("app", None).await.unwrap();
    other
        .revoke_secret_keeping_one("app", &new.secret_id)
        .await
        .unwrap();
    let client = store.client("app").await.unwrap().unwrap();
    assert!(client
        .verify_secret(new.secret.expose_secret().as_bytes())
        .is_none());
    assert!(client
        .verify_secret(rotated.secret.expose_secret().as_bytes())
        .is_some());
    assert_eq!(store.clients().await.unwrap().len(), 1);

    tokio::fs::write(&path, b"{\"clients\": [{\"client_id\": 1}]}")
        .await
        .unwrap();
    match store.client("app").await {
        Err(Error::Json { json_path, .. }) => assert_eq!(json_path, "clients[0].client_id"),
        other => panic!("expected a JSON error, got {other:?}"),
    }
    tokio::fs::remove_dir_all(&dir).await.unwrap();
}

#[tokio::test]
async fn registration_needs_a_tenant_list() {
    let store = InMemoryClientStore::new();
    assert!(matches!(
        store.create_client("app", None, vec![]).await,
        Err(Error::NoTenants { .. })
    ));
    assert!(matches!(
        InMemoryClientStore::with_clients([ClientRecord::new("app").unwrap()]),
        Err(Error::NoTenants { .. })
    ));
    store
        .create_client("app", None, vec![tenant()])
        .await
        .unwrap();
    assert!(matches!(
        store.set_tenants("app", vec![]).await,
        Err(Error::NoTenants { .. })
    ));
    // A file written before the list was required still loads; the client has none.
    let (path, dir) = temp_store_path();
    let mut old = ClientRecord::new("legacy").unwrap();
    old.secrets.push(generate_secret().1);
    std::fs::write(
        &path,
        serde_json::to_vec(&Registry {
            clients: vec![old],
            ..Default::default()
        })
        .unwrap(),
    )
    .unwrap();
    let file = JsonFileClientStore::new(&path);
    let legacy = file.client("legacy").await.unwrap().unwrap();
    assert!(legacy.tenants.is_empty() && !legacy.allows_tenant(&tenant()));
    file.set_tenants("legacy", vec![tenant()]).await.unwrap();
    assert!(file
        .client("legacy")
        .await
        .unwrap()
        .unwrap()
        .allows_tenant(&tenant()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn lineage_is_recorded_and_contained_in_one_step() {
    let store = InMemoryClientStore::new();
    let s0 = store
        .create_client("victim", None, vec![tenant()])
        .await
        .unwrap();
    let s1 = store
        .create_secret("victim", Some(&s0.secret_id))
        .await
        .unwrap();
    // S1 leaks: its holder mints three more (the cap), one of them through another.
    let a = store
        .create_secret("victim", Some(&s1.secret_id))
        .await
        .unwrap();
    let b = store
        .create_secret("victim", Some(&a.secret_id))
        .await
        .unwrap();
    let c = store
        .create_secret("victim", Some(&s1.secret_id))
        .await
        .unwrap();
    assert!(matches!(
        store.create_secret("victim", Some(&s1.secret_id)).await,
        Err(Error::TooManySecrets { .. })
    ));
    let client = store.client("victim").await.unwrap().unwrap();
    let mut family = client.descendants(&s1.secret_id);
    family.sort();
    let mut expected = vec![
        a.secret_id.clone(),
        b.secret_id.clone(),
        c.secret_id.clone(),
    ];
    expected.sort();
    assert_eq!(family, expected);
    assert!(client.descendants(&b.secret_id).is_empty());
    // A revoked secret cannot create secrets any more.
    store
        .revoke_secret("victim", &s0.secret_id, Utc::now())
        .await
        .unwrap();
    assert!(matches!(
        store.create_secret("victim", Some(&s0.secret_id)).await,
        Err(Error::TooManySecrets { .. } | Error::UnknownSecret { .. })
    ));
    // Revoking S1 with its descendants leaves none of them active.
    let mut revoked = store
        .revoke_with_descendants("victim", &s1.secret_id)
        .await
        .unwrap();
    revoked.sort();
    let mut all = vec![s1.secret_id.clone(), a.secret_id, b.secret_id, c.secret_id];
    all.sort();
    assert_eq!(revoked, all);
    assert_eq!(
        store
            .client("victim")
            .await
            .unwrap()
            .unwrap()
            .active_secrets()
            .count(),
        0
    );
}

#[tokio::test]
async fn rotate_revoking_others_works_at_the_cap() {
    let store = InMemoryClientStore::new();
    store
        .create_client("app", None, vec![tenant()])
        .await
        .unwrap();
    for _ in 1..MAX_ACTIVE_SECRETS {
        store.create_secret("app", None).await.unwrap();
    }
    let (new, revoked) = store.rotate_revoking_others("app").await.unwrap();
    assert_eq!(revoked.len(), MAX_ACTIVE_SECRETS);
    let client = store.client("app").await.unwrap().unwrap();
    let active: Vec<_> = client.active_secrets().map(|s| s.id.clone()).collect();
    assert_eq!(active, vec![new.secret_id.clone()]);
    assert!(client
        .verify_secret(new.secret.expose_secret().as_bytes())
        .is_some());
}

#[test]
fn pruning_keeps_lineage_transitive() {
    let mut client = ClientRecord::new("app").unwrap();
    let (_, mut root) = generate_secret();
    root.revoked = Some(Utc::now() - chrono::Duration::days(30));
    let root_id = root.id.clone();
    client.secrets.push(root);
    let (_, mut middle) = generate_secret();
    middle.created_by = Some(root_id.clone());
    middle.revoked = Some(Utc::now() - chrono::Duration::days(20));
    let middle_id = middle.id.clone();
    client.secrets.push(middle);
    let (_, mut leaf) = generate_secret();
    leaf.created_by = Some(middle_id.clone());
    let leaf_id = leaf.id.clone();
    client.secrets.push(leaf);
    for _ in 0..MAX_REVOKED_KEPT {
        let (_, mut other) = generate_secret();
        other.revoked = Some(Utc::now());
        client.secrets.push(other);
    }
    prune_revoked(&mut client);
    assert!(!client
        .secrets
        .iter()
        .any(|s| s.id == root_id || s.id == middle_id));
    // The oldest two revoked records went; the leaf now hangs off the root's parent.
    let leaf = client.secrets.iter().find(|s| s.id == leaf_id).unwrap();
    assert_eq!(leaf.created_by, None);
}

/// Two handles on one file (as the CLI and a server are) share only the OS file lock:
/// concurrent registrations through both all survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_one_file_lose_nothing() {
    let (path, dir) = temp_store_path();
    let one = Arc::new(JsonFileClientStore::new(&path));
    let two = Arc::new(JsonFileClientStore::new(&path));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .create_client(&format!("client-{i}"), None, vec![tenant()])
                .await
                .map(|_| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(one.clients().await.unwrap().len(), 32);
    assert_eq!(two.clients().await.unwrap().len(), 32);
    std::fs::remove_dir_all(&dir).unwrap();
}
