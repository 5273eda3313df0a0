//! One conformance suite for the tenant store, run against each backend: PostgreSQL (a
//! fresh database) and SQLite (a fresh file).

use cxgap_auth::{StoreError, TenantStore};
use cxgap_testkit::TestDb;

const PEPPER: &str = "test-pepper-0123456789";

async fn conformance(store: TenantStore) {
    store.ping().await.unwrap();
    let acme = store.create_tenant("acme").await.unwrap();
    assert!(matches!(store.create_tenant("acme").await, Err(StoreError::Conflict(_))));
    let globex = store.create_tenant("globex").await.unwrap();
    assert_eq!(store.tenants().await.unwrap().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["acme", "globex"]);

    let (info, key) = store.create_key("acme", "ci").await.unwrap();
    assert_eq!(info.tenant_id, acme.tenant_id);
    let (_, by_id) = store.create_key(&globex.tenant_id, "").await.unwrap();
    assert!(matches!(store.create_key("nobody", "").await, Err(StoreError::NotFound(_))));

    assert_eq!(store.authenticate(&key).await.unwrap(), Some(acme.tenant_id.clone()));
    assert_eq!(store.authenticate(&by_id).await.unwrap(), Some(globex.tenant_id.clone()));
    // A well-formed key with the wrong secret, a malformed key, an unknown id.
    let wrong = format!("{}{}", &key[..key.len() - 1], if key.ends_with('0') { '1' } else { '0' });
    assert_eq!(store.authenticate(&wrong).await.unwrap(), None);
    assert_eq!(store.authenticate("not-a-key").await.unwrap(), None);
    assert_eq!(store.authenticate(&format!("cxk_000000000000_{}", "0".repeat(64))).await.unwrap(), None);

    let keys = store.keys(Some("acme")).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(store.keys(None).await.unwrap().len(), 2);
    store.revoke_key(&info.key_id).await.unwrap();
    assert_eq!(store.authenticate(&key).await.unwrap(), None, "revoked keys stop working");
    assert!(matches!(store.revoke_key(&info.key_id).await, Err(StoreError::NotFound(_))));
    assert!(store.keys(Some("acme")).await.unwrap()[0].revoked_at.is_some());
}

#[tokio::test]
async fn postgres_backend() {
    let db = TestDb::new().await.unwrap();
    conformance(TenantStore::connect(&db.url, PEPPER).await.unwrap()).await;
    // Migrations are idempotent: connecting again works on the migrated database.
    TenantStore::connect(&db.url, PEPPER).await.unwrap().ping().await.unwrap();
}

#[tokio::test]
async fn sqlite_backend() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("cxgap.sqlite").display());
    conformance(TenantStore::connect(&url, PEPPER).await.unwrap()).await;
}

#[tokio::test]
async fn keys_do_not_verify_under_another_pepper() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("cxgap.sqlite").display());
    let store = TenantStore::connect(&url, PEPPER).await.unwrap();
    store.create_tenant("acme").await.unwrap();
    let (_, key) = store.create_key("acme", "").await.unwrap();
    let other = TenantStore::connect(&url, "another-pepper-0123456789").await.unwrap();
    assert_eq!(other.authenticate(&key).await.unwrap(), None);
}
