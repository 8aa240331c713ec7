//! Both backends, the same expectations: each test runs on the embedded store and on a real
//! PostgreSQL.

use super::*;
use edgefleet_tests::Postgres;

fn envelope(device: &str, seq: u64) -> Vec<u8> {
    format!(
        r#"{{"deviceId":"{device}","module":"m","seq":{seq},"timestampMs":{seq},"kind":"event","body":{{"error":"e"}}}}"#
    )
    .into_bytes()
}

fn arrived(device: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<(String, u64, Vec<u8>)> {
    seqs.into_iter()
        .map(|s| (device.to_owned(), s, envelope(device, s)))
        .collect()
}

fn no_status(_: &str, _: Option<&[u8]>) -> Result<MergedStatus, StoreError> {
    unreachable!("no device is heard from")
}

fn records(records: &[(String, u64, Vec<u8>)]) -> Arrivals<'_> {
    Arrivals {
        heard: &[],
        merge_status: &no_status,
        records,
    }
}

/// A status that counts the reports merged into it, and says the device holds nothing below 9.
fn count_reports(_: &str, stored: Option<&[u8]>) -> Result<MergedStatus, StoreError> {
    let count: u64 = stored.map_or(0, |s| serde_json::from_slice(s).expect("a count"));
    Ok(MergedStatus {
        json: (count + 1).to_string().into_bytes(),
        floor: Some(9),
    })
}

async fn stored(store: &FleetStore, device: &str) -> Vec<u64> {
    store
        .telemetry_after(device, 0, usize::MAX, |_| true)
        .await
        .expect("read")
        .iter()
        .map(|r| r.seq)
        .collect()
}

/// An embedded store and a PostgreSQL store (with the server that must outlive it).
async fn both_backends() -> Vec<(FleetStore, Option<Postgres>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("dir");
    let embedded = FleetStore::open_embedded(dir.path()).expect("open");
    let postgres = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("start PostgreSQL");
    let on_postgres = FleetStore::connect_postgres(&postgres.url())
        .await
        .expect("connect");
    vec![
        (embedded, None, dir),
        (
            on_postgres,
            Some(postgres),
            tempfile::tempdir().expect("dir"),
        ),
    ]
}

#[tokio::test]
async fn records_are_put_listed_in_name_order_and_deleted_and_counters_count() {
    for (store, _server, _dir) in both_backends().await {
        let backend = store.backend_name();
        let mut batch = Batch::default();
        batch.put("device", "b", &"second").expect("put");
        batch.put("device", "a", &"first").expect("put");
        batch.put("device", "a", &"first, again").expect("put");
        batch.put("device-group", "x", &1).expect("put");
        batch
            .put("deployment-revision/web", "000000000001", &1)
            .expect("put");
        store.commit(batch).await.expect("commit");
        let devices: Vec<(String, String)> = store.list("device").await.expect("list");
        assert_eq!(
            devices,
            vec![
                ("a".to_owned(), "first, again".to_owned()),
                ("b".to_owned(), "second".to_owned())
            ],
            "{backend}"
        );
        let revisions: Vec<(String, u32)> =
            store.list("deployment-revision/web").await.expect("list");
        assert_eq!(revisions, vec![("000000000001".to_owned(), 1)], "{backend}");
        // Several records by name in one read: those that exist, of that kind only.
        let some: BTreeMap<String, String> = store
            .get_many("device", &["b", "x", "a"])
            .await
            .expect("get many");
        assert_eq!(some.keys().collect::<Vec<_>>(), ["a", "b"], "{backend}");
        let mut batch = Batch::default();
        batch.delete("device", "a");
        store.commit(batch).await.expect("commit");
        assert_eq!(store.get::<String>("device", "a").await.expect("get"), None);
        assert_eq!(
            store.get::<String>("device", "b").await.expect("get"),
            Some("second".to_owned())
        );
        assert_eq!(
            store.next("deployment").await.expect("next"),
            1,
            "{backend}"
        );
        assert_eq!(
            store.next("deployment").await.expect("next"),
            2,
            "{backend}"
        );
        // A record holding a NUL character (a device's error text, say) is kept as it is.
        store.put("status", "gw", &"a\u{0}b").await.expect("put");
        assert_eq!(
            store.get::<String>("status", "gw").await.expect("get"),
            Some("a\u{0}b".to_owned()),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn the_acknowledgement_is_the_highest_contiguous_seq_and_moves_past_what_the_device_dropped()
{
    for (store, _server, _dir) in both_backends().await {
        let backend = store.backend_name();
        let keep = TelemetryRetention::default();
        let ingested = store
            .ingest(records(&arrived("gw", [1, 2, 4])), &keep, 0)
            .await
            .expect("ingest");
        assert_eq!(ingested.committed["gw"], 2, "{backend}: 3 is missing");
        assert_eq!(ingested.new_records, 3, "{backend}");
        // A repeat is acknowledged again, stored once.
        let ingested = store
            .ingest(records(&arrived("gw", [2, 3, 3])), &keep, 0)
            .await
            .expect("ingest");
        assert_eq!(ingested.committed["gw"], 4, "{backend}");
        assert_eq!(ingested.new_records, 1, "{backend}");
        assert_eq!(stored(&store, "gw").await, vec![1, 2, 3, 4], "{backend}");
        // The device dropped 5..=9 and now holds 10 on: the fleet acknowledges past the gap.
        store
            .ingest(records(&arrived("gw", [10, 11])), &keep, 0)
            .await
            .expect("ingest");
        assert_eq!(
            store.committed("gw").await.expect("committed"),
            4,
            "{backend}"
        );
        let heard = ["gw".to_owned()];
        let reported = Arrivals {
            heard: &heard,
            merge_status: &count_reports,
            records: &[],
        };
        let ingested = store.ingest(reported, &keep, 0).await.expect("ingest");
        assert_eq!(ingested.committed["gw"], 11, "{backend}");
        // The status is merged with the stored one, in the transaction.
        store.ingest(reported, &keep, 0).await.expect("ingest");
        assert_eq!(
            store.get::<u64>(kind::STATUS, "gw").await.expect("status"),
            Some(2),
            "{backend}"
        );
        let newest = store.telemetry("gw", 2).await.expect("newest");
        assert_eq!(
            newest.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![10, 11],
            "{backend}"
        );
    }
}

#[tokio::test]
async fn retention_drops_the_oldest_records_by_age_and_by_bytes() {
    for (store, _server, _dir) in both_backends().await {
        let backend = store.backend_name();
        let record = stored_size(&envelope("gw", 1));
        let three = TelemetryRetention {
            max_age_ms: 1000,
            max_bytes_per_device: 3 * record + 2,
        };
        store
            .ingest(records(&arrived("gw", 1..=5)), &three, 10_000)
            .await
            .expect("ingest");
        assert_eq!(
            stored(&store, "gw").await,
            vec![3, 4, 5],
            "{backend}: bytes"
        );
        store
            .ingest(records(&arrived("gw", [6])), &three, 11_500)
            .await
            .expect("ingest");
        assert_eq!(
            stored(&store, "gw").await,
            vec![6],
            "{backend}: age: the others are 1.5 s old"
        );
        assert_eq!(
            store.committed("gw").await.expect("committed"),
            6,
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_record_filling_a_gap_is_acknowledged_through_more_stored_records_than_a_page() {
    for (store, _server, _dir) in both_backends().await {
        let backend = store.backend_name();
        let keep = TelemetryRetention::default();
        let ingested = store
            .ingest(records(&arrived("gw", 2..=2500)), &keep, 0)
            .await
            .expect("ingest");
        assert_eq!(ingested.committed["gw"], 0, "{backend}: 1 is missing");
        let ingested = store
            .ingest(records(&arrived("gw", [1, 1, 7])), &keep, 0)
            .await
            .expect("ingest");
        assert_eq!(ingested.committed["gw"], 2500, "{backend}");
        assert_eq!(ingested.new_records, 1, "{backend}");
        // A floor past a page of stored records, and a gap after it.
        store
            .ingest(
                records(&arrived("gw", (2502..=4000).chain(4002..=4100))),
                &keep,
                0,
            )
            .await
            .expect("ingest");
        let heard = ["gw".to_owned()];
        let floor_at = |_: &str, _: Option<&[u8]>| {
            Ok(MergedStatus {
                json: b"{}".to_vec(),
                floor: Some(2501),
            })
        };
        let reported = Arrivals {
            heard: &heard,
            merge_status: &floor_at,
            records: &[],
        };
        let ingested = store.ingest(reported, &keep, 0).await.expect("ingest");
        assert_eq!(ingested.committed["gw"], 4000, "{backend}: 4001 is missing");
        assert_eq!(store.committed("gw").await.expect("committed"), 4000);
    }
}

fn scope(token: &str, name: Option<&str>) -> std::sync::Arc<audit::AuditScope> {
    std::sync::Arc::new(audit::AuditScope::new(
        (token.to_owned(), edgefleet_common::fleet_api::Role::Admin),
        (
            "PUT".to_owned(),
            "/v1/registries/{name}".to_owned(),
            "/v1/registries/r".to_owned(),
        ),
        kind::REGISTRY,
        name.map(str::to_owned),
    ))
}

/// Commits `batch` inside `scope`; returns whether the commit wrote the scope's entry.
async fn commit_in(
    store: &FleetStore,
    scope: std::sync::Arc<audit::AuditScope>,
    batch: Batch,
) -> bool {
    audit::audited(scope.clone(), store.commit(batch))
        .await
        .expect("commit");
    scope.recorded()
}

#[tokio::test]
async fn a_change_writes_its_audit_entry_with_the_record_digests_before_and_after() {
    for (store, _server, _dir) in both_backends().await {
        let backend = store.backend_name();
        let digest = |value: &str| audit::digest(&serde_json::to_vec(value).expect("json"));
        // Created: nothing before.
        let mut batch = Batch::default();
        batch.put(kind::REGISTRY, "r", &"one").expect("put");
        batch
            .put(kind::DEVICE, "gw", &"not the object")
            .expect("put");
        assert!(
            commit_in(&store, scope("alice", Some("r")), batch).await,
            "{backend}"
        );
        // A commit that does not write the record writes no entry.
        let mut batch = Batch::default();
        batch.put(kind::DEVICE, "gw", &"again").expect("put");
        assert!(
            !commit_in(&store, scope("alice", Some("r")), batch).await,
            "{backend}"
        );
        // Changed, by another token: before is what the first change left.
        let mut batch = Batch::default();
        batch.put(kind::REGISTRY, "r", &"two").expect("put");
        assert!(
            commit_in(&store, scope("bob", Some("r")), batch).await,
            "{backend}"
        );
        // Removed: nothing after.
        let mut batch = Batch::default();
        batch.delete(kind::REGISTRY, "r");
        assert!(
            commit_in(&store, scope("alice", Some("r")), batch).await,
            "{backend}"
        );
        // Outside any scope (the rollout task, ingestion): no entry.
        store.put(kind::REGISTRY, "r", &"three").await.expect("put");

        let entries = store.audit_entries(0, None, 100).await.expect("audit");
        let seen: Vec<(&str, &str, Option<String>, Option<String>)> = entries
            .iter()
            .rev()
            .map(|e| {
                (
                    e.token.as_str(),
                    e.object.as_str(),
                    e.before.clone(),
                    e.after.clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("alice", "registry/r", None, Some(digest("one"))),
                (
                    "bob",
                    "registry/r",
                    Some(digest("one")),
                    Some(digest("two"))
                ),
                ("alice", "registry/r", Some(digest("two")), None),
            ],
            "{backend}"
        );
        // The digest is of the bytes as stored.
        let stored = store
            .get_raw(kind::REGISTRY, "r")
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(audit::digest(&stored), digest("three"), "{backend}");

        // A request that changed nothing is appended on its own; filters by token and time.
        let refused = scope("carol", Some("r")).unchanged_entry(403, Some(&stored), u64::MAX / 2);
        store.append_audit(&refused).await.expect("append");
        let carol = store
            .audit_entries(0, Some("carol"), 100)
            .await
            .expect("audit");
        assert_eq!(carol, vec![refused.clone()], "{backend}");
        assert_eq!(carol[0].before, carol[0].after, "{backend}");
        let newest = store
            .audit_entries(u64::MAX / 2, None, 100)
            .await
            .expect("audit");
        assert_eq!(newest, vec![refused], "{backend}: since");
        let bob = store
            .audit_entries(0, Some("bob"), 100)
            .await
            .expect("audit");
        assert_eq!(bob.len(), 1, "{backend}");
        assert_eq!(
            store.audit_entries(0, None, 2).await.expect("audit").len(),
            2,
            "{backend}: limit"
        );
    }
}

#[tokio::test]
async fn a_change_of_several_records_is_one_entry_naming_the_first_and_how_many_more() {
    for (store, _server, _dir) in both_backends().await {
        let backend = store.backend_name();
        let mut batch = Batch::default();
        batch.put(kind::REGISTRY, "b", &1).expect("put");
        batch.put(kind::REGISTRY, "a", &2).expect("put");
        assert!(
            commit_in(&store, scope("alice", None), batch).await,
            "{backend}"
        );
        let mut batch = Batch::default();
        batch.put(kind::REGISTRY, "a", &3).expect("put");
        batch.put(kind::REGISTRY, "b", &1).expect("put");
        assert!(
            commit_in(&store, scope("alice", None), batch).await,
            "{backend}"
        );
        let entries = store.audit_entries(0, None, 10).await.expect("audit");
        let (second, first) = (&entries[0], &entries[1]);
        assert_eq!(first.object, "registry/a and 1 more", "{backend}");
        assert_eq!(
            first.before.as_deref(),
            Some(audit::digest(b"a=-\nb=-\n").as_str()),
            "{backend}"
        );
        assert_eq!(second.before, first.after, "{backend}");
        assert_ne!(second.after, second.before, "{backend}: a changed");
    }
}
